//go:build integration

package integration

// The scenarios that need a configuration the shared lab does not have: short tracking
// deadlines, a small hard size limit and the policy that refuses ordinary mail (one private
// pec-milter of A for the three, behind temporary copies of A's real submission and MX
// listeners), and a delivery point that does not serve one of its provider's domains (a
// private pec-lmtpd). They reuse the private daemons of the access point, tracking and
// delivery tests (startPrivateAPWith, privateMX, privateDP): their own store, tokens and
// clamd, so the shared lab is not reconfigured.

import (
	"os"
	"strings"

	"gopkg.in/yaml.v3"

	"github.com/gestore-pec/gestore/integration/mailtest"
	"github.com/gestore-pec/gestore/pec"
	"github.com/gestore-pec/gestore/pec/store"
)

// The private pec-milter's settings: the 12 h / 22 h / 24 h deadlines of pec-spec.md §6.3 as
// 10 s / 20 s / 25 s, swept every 2 s (wide enough for a loaded machine; the scenario is sent
// first, so its deadlines run while the others are sent); a hard size limit of 2 MB (RFC 6109 §3.1.2; the
// lab's is 100 MB, which would take minutes to send here); ordinary mail refused at its MX.
func scenarioAPConfig(y map[string]any) {
	y["tracking"] = map[string]any{"first": "10s", "final_from": "20s", "final": "25s", "sweep_every": "2s"}
	y["limits"] = map[string]any{"max_recipients": 500, "max_size_times_recipients": "30MB", "hard_max_size": "2MB"}
	y["policy"] = map[string]any{"ordinary_mail": "reject"}
}

const scenarioHardMax = 2 * 1000 * 1000

// privateAP is the suite's private access point of A, started on first use.
func (su *suite) privateAP() *privateAP {
	if su.ap == nil {
		su.ap = startPrivateAPWith(su.t, su.l, su.a, apOptions{config: scenarioAPConfig})
	}
	return su.ap
}

// privateMX is a temporary copy of A's MX listener calling the private pec-milter (its
// reception point), started on first use.
func (su *suite) privateMX() string {
	if su.mx == "" {
		su.mx = privateMX(su.t, su.a, su.privateAP())
	}
	return su.mx
}

// refusePolicy: under policy.ordinary_mail reject, the reception point refuses ordinary mail at
// SMTP (550 5.7.1, the reason in the reply) instead of wrapping it, and logs it (pec-spec.md
// §2.5): O's MTA keeps the message and tells its sender; nothing reaches the PEC mailbox.
func (s *scen) refusePolicy() {
	mx := s.privateMX()
	oscar, alice := s.addr("oscar"), s.addr("alice")
	msg := mailtest.Message(oscar, []string{alice}, "ciao "+s.token, "Posta ordinaria.\n")
	// As O's MTA delivers it: from O's address, no AUTH.
	s.refused(retryLost(s, func() error { return inject(mx, s.o, heloToken("scen"), oscar, []string{alice}, msg) }), 550, "5.7.1")
	s.loggedWhy(s.privateAP().cfg, store.KindAnomalia, `"error_detail":"ordinary:`)
}

// farOverSize: above the hard limit the access point answers 552 5.3.4 and produces nothing,
// not even an avviso (RFC 6109 §3.1.2, pec-spec.md §7.1 6).
func (s *scen) farOverSize() {
	p, bruno := s.privateAP(), s.addr("bruno")
	body := strings.Repeat(strings.Repeat("y", 76)+"\n", scenarioHardMax/78+1000)
	msg := raw(body, "From: "+s.addr("alice"), "To: "+bruno, "Subject: PEC "+s.token)
	s.refused(retryLost(s, func() error { return p.submission.Send(s.addr("alice"), []string{bruno}, msg) }), 552, "5.3.4")
	s.noLog(p.cfg)
}

// notices: a certified recipient at B that A cannot reach (A's transport_maps sends it to a
// closed port while the suite runs): nothing heard, so the sender gets the 12 h notice, then
// the 24 h one (pec-spec.md §6.3), each once.
func (s *scen) notices() {
	p := s.privateAP()
	r := strings.ToLower(s.token) + "@" + s.b.Domain
	unreachable(s.t, s.a, r)
	msg := s.original("alice", []string{r}, nil)
	if err := retryLost(s, func() error { return p.submission.Send(s.addr("alice"), []string{r}, msg) }); err != nil {
		s.fail("submission: %v", err)
	}
	s.expect(s.addr("alice"), label(pec.KindAccettazione, ""), label(pec.KindPreavviso12h, r), label(pec.KindPreavviso24h, r))
	s.logged(p.cfg, store.KindAccettazione, store.KindBustaTrasporto, store.KindPreavviso12h, store.KindMancataConsegna24h)
	s.tracked(p.cfg, map[string]store.State{r: store.StateNotified24})
}

// unknownDomain: a busta for a domain the providers index gives A (pec-a2.test) reaches a
// delivery point of A that does not serve it (a private pec-lmtpd whose provider.domains lacks
// it, which A's Postfix uses for this one recipient while the suite runs): the delivery point
// answers with an avviso di mancata consegna, errore no-dominio (pec-spec.md §7.4, INFERENCE),
// after A's reception point took the busta in charge.
func (s *scen) unknownDomain() {
	p := s.privateLMTPD(func(y map[string]any) {
		y["provider"].(map[string]any)["domains"] = []string{s.a.Domain} // not pec-a2.test
		delete(y["signer"].(map[string]any), "keys")                     // nor its key
	})
	rcpt := "nessuno-" + strings.ToLower(s.token[len(s.token)-8:]) + "@pec-a2.test"
	if err := routesOf(s.a).add(s.a, rcpt, "lmtp:inet:"+p.listen); err != nil {
		s.t.Fatal(err)
	}
	s.t.Cleanup(func() {
		if err := routesOf(s.a).remove(s.a, rcpt); err != nil {
			s.t.Errorf("restoring transport_maps: %v", err)
		}
	})
	s.mustSubmit("alice", []string{rcpt}, s.original("alice", []string{rcpt}, nil))
	s.expect(s.addr("alice"), label(pec.KindAccettazione, ""), label(pec.KindMancataConsegna, rcpt, "no-dominio"))
	s.expect(s.addr("ricevute@A"), label(pec.KindPresaInCarico, ""))
	s.logged(p.cfg, store.KindMancataConsegna)
	s.logged(s.a.ConfigFile, store.KindAccettazione, store.KindPresaInCarico, store.KindRicezioneRicevuta)
	s.tracked(s.a.ConfigFile, map[string]store.State{rcpt: store.StateFailed})
}

// privateLMTPD starts a pec-lmtpd of A with its own tokens and listener on A's store (the
// delivery tests' privateDP, configured by configureLMTPD and then edit) in front of the lab's
// own Dovecot of A: cheaper than startPrivateDP's private Dovecot, for a scenario that needs
// another configuration of the delivery point, not another mailbox store.
func (s *scen) privateLMTPD(edit func(y map[string]any)) *privateDP {
	t := s.t
	var labCfg struct {
		LMTP struct {
			Dovecot string         `yaml:"dovecot"`
			Doveadm map[string]any `yaml:"doveadm"`
		} `yaml:"lmtp"`
		Store map[string]any `yaml:"store"`
	}
	raw, err := os.ReadFile(s.a.ConfigFile)
	if err != nil {
		t.Fatal(err)
	}
	if err := yaml.Unmarshal(raw, &labCfg); err != nil {
		t.Fatal(err)
	}
	p := &privateDP{dir: t.TempDir()}
	p.configureLMTPD(t, s.l, s.a, func(y map[string]any) {
		lm := y["lmtp"].(map[string]any)
		lm["dovecot"], lm["doveadm"] = labCfg.LMTP.Dovecot, labCfg.LMTP.Doveadm
		// A's own store, as every delivery point of a provider has: the receipts it emits
		// about A's transactions move their tracking (store.Transition.ProvesQueued).
		y["store"] = labCfg.Store
		edit(y)
	})
	p.Start(t)
	t.Cleanup(func() {
		p.Kill()
		p.log.Close()
		if t.Failed() {
			data, _ := os.ReadFile(p.logFile)
			t.Logf("private pec-lmtpd log (tail):\n%s", tail(data, 4000))
		}
	})
	return p
}
