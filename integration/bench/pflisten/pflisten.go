// Package pflisten adds a temporary smtpd listener to a running Postfix instance of the lab,
// as a copy of an existing service with some options overridden, and removes it again. The
// access point benchmark uses it for a submission listener without the milter (the same TLS,
// SASL and restrictions, so that only the milter differs), and the access point integration
// tests for a submission listener that calls a private pec-milter whose dependencies they
// may break without disturbing the shared lab.
//
// `postfix reload` is graceful: running smtpd processes finish their sessions.
package pflisten

import (
	"bufio"
	"bytes"
	"fmt"
	"net"
	"os/exec"
	"sort"
	"strings"
	"time"
)

// Listener is a temporary master.cf entry.
type Listener struct {
	ConfigDir string // postfix -c
	Addr      string // host:port it listens on
	service   string
}

// Add creates the service Addr ("127.0.0.10:1587") in the Postfix instance of configDir,
// with every "-o" option of service from ("submission/inet") and then overrides, reloads
// Postfix and waits until the port answers.
func Add(configDir, addr, from string, overrides map[string]string) (*Listener, error) {
	l := &Listener{ConfigDir: configDir, Addr: addr, service: addr + "/inet"}
	if err := l.add(addr+" inet n - n - - smtpd", from, overrides); err != nil {
		return nil, err
	}
	deadline := time.Now().Add(15 * time.Second)
	for {
		c, err := net.DialTimeout("tcp", addr, time.Second)
		if err == nil {
			c.Close()
			return l, nil
		}
		if time.Now().After(deadline) {
			_ = l.Remove()
			return nil, fmt.Errorf("pflisten: %s does not answer after reload: %w", addr, err)
		}
		time.Sleep(100 * time.Millisecond)
	}
}

// AddUnix creates the unix service name running command (e.g. a private "cleanup"), with every
// "-o" option of service from ("pec-cleanup/unix") and then overrides, and reloads Postfix.
func AddUnix(configDir, name, command, from string, overrides map[string]string) (*Listener, error) {
	l := &Listener{ConfigDir: configDir, service: name + "/unix"}
	if err := l.add(name+" unix n - n - 0 "+command, from, overrides); err != nil {
		return nil, err
	}
	return l, nil
}

func (l *Listener) add(entry, from string, overrides map[string]string) error {
	out, err := exec.Command("postconf", "-c", l.ConfigDir, "-P").Output()
	if err != nil {
		return fmt.Errorf("postconf -P: %w", err)
	}
	opts := map[string]string{}
	sc := bufio.NewScanner(bytes.NewReader(out))
	for sc.Scan() {
		k, v, ok := strings.Cut(sc.Text(), " = ")
		if !ok {
			k, v, ok = strings.Cut(sc.Text(), " =")
		}
		if name, found := strings.CutPrefix(k, from+"/"); ok && found {
			opts[name] = v
		}
	}
	for k, v := range overrides {
		opts[k] = v
	}
	if err := postconf(l.ConfigDir, "-M", l.service+"="+entry); err != nil {
		return err
	}
	keys := make([]string, 0, len(opts))
	for k := range opts {
		keys = append(keys, k)
	}
	sort.Strings(keys)
	for _, k := range keys {
		if err := postconf(l.ConfigDir, "-P", l.service+"/"+k+"="+opts[k]); err != nil {
			_ = l.Remove()
			return err
		}
	}
	if err := reload(l.ConfigDir); err != nil {
		_ = l.Remove()
		return err
	}
	return nil
}

// Remove deletes the entry and reloads Postfix.
func (l *Listener) Remove() error {
	if err := postconf(l.ConfigDir, "-MX", l.service); err != nil {
		return err
	}
	return reload(l.ConfigDir)
}

// SetMain sets a main.cf parameter of the instance and reloads Postfix; restore puts the
// previous value back and reloads again.
func SetMain(configDir, name, value string) (restore func() error, err error) {
	out, err := exec.Command("postconf", "-c", configDir, "-h", name).Output()
	if err != nil {
		return nil, fmt.Errorf("postconf -h %s: %w", name, err)
	}
	old := strings.TrimSpace(string(out))
	if err := postconf(configDir, "-e", name+" = "+value); err != nil {
		return nil, err
	}
	restore = func() error {
		if err := postconf(configDir, "-e", name+" = "+old); err != nil {
			return err
		}
		return reload(configDir)
	}
	if err := reload(configDir); err != nil {
		_ = restore()
		return nil, err
	}
	return restore, nil
}

// FreePort returns a port that is free on host right now.
func FreePort(host string) (string, error) {
	ln, err := net.Listen("tcp", net.JoinHostPort(host, "0"))
	if err != nil {
		return "", err
	}
	defer ln.Close()
	return ln.Addr().String(), nil
}

func postconf(dir string, args ...string) error {
	out, err := exec.Command("postconf", append([]string{"-c", dir}, args...)...).CombinedOutput()
	if err != nil {
		return fmt.Errorf("postconf %s: %v: %s", strings.Join(args, " "), err, out)
	}
	return nil
}

func reload(dir string) error {
	// Postfix prints errors only to a terminal (lab-recipe §2 gotcha 1): run it under script.
	out, err := exec.Command("script", "-qec", "postfix -c "+dir+" reload", "/dev/null").CombinedOutput()
	if err != nil {
		return fmt.Errorf("postfix reload: %v: %s", err, out)
	}
	return nil
}
