package demo

import (
	"os"
	"os/exec"
	"path/filepath"
	"strings"

	"github.com/gestore-pec/gestore/internal/corpus"
)

// Check is one independent check of a saved message: a command and whether it passed.
type Check struct {
	Name   string // "pecctl verify", "openssl smime -verify", "xmllint --dtdvalid"
	Cmd    []string
	OK     bool
	Output string
}

// dtd is the daticert.xml DTD of the technical rules (pec-spec.md §5.1): the copy in this
// checkout, or testdata/corpus under the working directory when the binary moved.
func dtd() string {
	if p := corpus.DTD(); fileExists(p) {
		return p
	}
	return filepath.Join("testdata", "corpus", "jpec-server", "daticert.dtd")
}

func fileExists(p string) bool { _, err := os.Stat(p); return err == nil }

// commands are the checks the project asks of every message a provider emits: pecctl verify
// (signature, chain to the lab CA at signing time, the CRL, the signer and its domains in the
// providers index of A's configuration as RFC 6109 §7.2 asks, conformance of headers, parts and
// daticert), openssl's own S/MIME verification with the lab CA, and the daticert.xml against the
// DTD.
func (d *run) commands(s Saved) []Check {
	ca := d.Lab.CA.Cert
	verify := []string{d.Pecctl, "verify", "--ca", ca}
	if d.Lab.CA.CRL != "" {
		verify = append(verify, "--crl", d.Lab.CA.CRL)
	}
	if d.cast.a.ConfigFile != "" {
		verify = append(verify, "-config", d.cast.a.ConfigFile)
	}
	cs := []Check{
		{Name: "pecctl verify", Cmd: append(verify, s.Path)},
		{Name: "openssl smime -verify", Cmd: []string{"openssl", "smime", "-verify", "-CAfile", ca, "-purpose", "any", "-in", s.Path, "-out", os.DevNull}},
	}
	if s.Daticert != "" {
		cs = append(cs, Check{Name: "xmllint --dtdvalid", Cmd: []string{"xmllint", "--noout", "--dtdvalid", dtd(), s.Daticert}})
	} else {
		cs = append(cs, Check{Name: "xmllint --dtdvalid", Output: "no daticert.xml in the message"})
	}
	return cs
}

func (d *run) check(s Saved) []Check {
	cs := d.commands(s)
	for i := range cs {
		if cs[i].Cmd == nil {
			continue
		}
		out, err := exec.Command(cs[i].Cmd[0], cs[i].Cmd[1:]...).CombinedOutput()
		cs[i].OK, cs[i].Output = err == nil, strings.TrimSpace(string(out))
		if err != nil && cs[i].Output == "" {
			cs[i].Output = err.Error()
		}
	}
	return cs
}
