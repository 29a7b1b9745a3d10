package main

import (
	"bufio"
	"fmt"
	"os"
	"path/filepath"
	"strconv"
	"strings"
	"time"

	"github.com/gestore-pec/gestore/integration/lab"
	"github.com/gestore-pec/gestore/integration/mailtest"
)

// The memory benchmark (issue 19 figure P6, -point rss): one message of -rss-size bytes from
// alice@A to a user of O through A's access point; A's pec-milter's peak resident set
// (VmHWM, reset before the message by writing 5 to /proc/<pid>/clear_refs, proc(5)) is
// compared with the message's size. The lab's limits.max_size_times_recipients must allow the
// message (PEC_LAB_SIZE_X_RCPTS=200MB lab-up.sh), or it is refused with an avviso.
func runRSS(size int, timeout time.Duration) error {
	l, err := lab.Load()
	if err != nil {
		return err
	}
	a, err := l.Provider("a")
	if err != nil {
		return err
	}
	pid, err := findProcess("pec-milter", a.ConfigFile)
	if err != nil {
		return err
	}
	tlsConf, err := mailtest.TLSConfig(a.Postfix.TLSCert, "mx."+a.Domain)
	if err != nil {
		return err
	}
	alice, rcpt := a.Users[0], l.Ordinary.Users[0].Address
	// Twice: as net/smtp sends (no SIZE in MAIL FROM), then as mail clients do (RFC 1870
	// SIZE=), which lets pec-milter write the body into one buffer as it arrives.
	for _, declare := range []bool{false, true} {
		time.Sleep(3 * time.Second) // pec-milter gives memory back after a large message
		if err := os.WriteFile(fmt.Sprintf("/proc/%d/clear_refs", pid), []byte("5"), 0); err != nil {
			return fmt.Errorf("resetting VmHWM: %w", err)
		}
		before := procStatus(pid)
		msg := message(alice.Address, rcpt, "rss "+mailtest.Token("rss"), payload(size))
		sub := mailtest.Submission{Addr: a.Postfix.Submission, TLS: tlsConf, User: alice.Address, Pass: alice.Password, Timeout: timeout, DeclareSize: declare}
		start := time.Now()
		err = sub.Send(alice.Address, []string{rcpt}, msg)
		took := time.Since(start)
		after := procStatus(pid)
		if err != nil {
			return fmt.Errorf("sending %d bytes: %w", len(msg), err)
		}
		hwm := after["VmHWM"]
		how := "MAIL FROM without SIZE"
		if declare {
			how = "MAIL FROM with SIZE="
		}
		fmt.Printf("P6 (%s): one %d-byte message accepted in %.1fs; pec-milter (pid %d) VmRSS before %.1f MB, VmHWM %.1f MB = %.2f × the message (goal ≤ 2.5)\n",
			how, len(msg), took.Seconds(), pid, before["VmRSS"]/1e6, hwm/1e6, hwm/float64(len(msg)))
	}
	return nil
}

// findProcess is the pid of the program whose command line names config.
func findProcess(program, config string) (int, error) {
	ents, _ := os.ReadDir("/proc")
	for _, e := range ents {
		pid, err := strconv.Atoi(e.Name())
		if err != nil {
			continue
		}
		c, err := os.ReadFile(filepath.Join("/proc", e.Name(), "cmdline"))
		if err != nil {
			continue
		}
		args := strings.Split(string(c), "\x00")
		if strings.HasSuffix(args[0], "/"+program) && strings.Contains(string(c), config) {
			return pid, nil
		}
	}
	return 0, fmt.Errorf("no %s running with %s", program, config)
}

// procStatus reads the kB fields of /proc/<pid>/status, in bytes.
func procStatus(pid int) map[string]float64 {
	out := map[string]float64{}
	f, err := os.Open(fmt.Sprintf("/proc/%d/status", pid))
	if err != nil {
		return out
	}
	defer f.Close()
	sc := bufio.NewScanner(f)
	for sc.Scan() {
		k, v, ok := strings.Cut(sc.Text(), ":")
		f := strings.Fields(v)
		if ok && len(f) == 2 && f[1] == "kB" {
			n, _ := strconv.ParseFloat(f[0], 64)
			out[k] = n * 1024
		}
	}
	return out
}
