package pec_test

import (
	"context"
	"crypto"
	"crypto/ecdsa"
	"crypto/elliptic"
	"crypto/rand"
	"crypto/x509"
	"encoding/pem"
	"math/big"
	"os"
	"path/filepath"
	"strings"
	"sync/atomic"
	"testing"
	"time"

	"github.com/gestore-pec/gestore/hsm/hsmtest"
	"github.com/gestore-pec/gestore/pec"
	"github.com/gestore-pec/gestore/pec/clamd"
	"github.com/gestore-pec/gestore/pec/clamd/clamdtest"
	"github.com/gestore-pec/gestore/pec/daticert"
	"github.com/gestore-pec/gestore/pec/igpec"
	"github.com/gestore-pec/gestore/pec/store"
	"github.com/gestore-pec/gestore/pec/store/storetest"
)

// The reception fixture: provider B receives (its engine, store, fake clamd) from provider A
// and a few other signers, all certified by one throw-away CA that publishes a CRL:
//
//	a   Provider A S.p.A., pec-a.test, mailReceipt ricevute@pec-a.test   listed
//	b   Provider B S.p.A., pec-b.test, mailReceipt ricevute@pec-b.test   listed (us)
//	f   a forger: "Provider A S.p.A." with A's service address          not listed
//	r   Provider R S.p.A., pec-r.test                                    listed, revoked

// staticKeys is a pec.Signer with one key and chain for every domain.
type staticKeys struct {
	key   crypto.Signer
	chain []*x509.Certificate
}

func (s staticKeys) SignerFor(string) (crypto.Signer, []*x509.Certificate, error) {
	return s.key, s.chain, nil
}

type peer struct {
	id   pec.Identity
	cert *x509.Certificate
	bd   *pec.Builder
	rec  *igpec.Record
}

func newPeer(t testing.TB, ca *hsmtest.CA, name, domain string) *peer {
	t.Helper()
	k, err := ecdsa.GenerateKey(elliptic.P256(), rand.Reader)
	if err != nil {
		t.Fatal(err)
	}
	id := pec.Identity{Name: name, Domain: domain, ServiceAddress: "posta-certificata@" + domain, ReceiptAddress: "ricevute@" + domain}
	now := time.Now()
	cert := ca.ProviderCert(t, name, id.ServiceAddress, k.Public(), now.AddDate(0, 0, -30), now.AddDate(1, 0, 0))
	p := &peer{id: id, cert: cert, bd: &pec.Builder{ID: id, Keys: staticKeys{k, []*x509.Certificate{cert}}}}
	if p.rec, err = igpec.NewRecord(name, "", id.ReceiptAddress, []*x509.Certificate{cert}, domain); err != nil {
		t.Fatal(err)
	}
	return p
}

// rxIndex is the providers index of the fixture; Stale can be switched on.
type rxIndex struct {
	snap  *igpec.Snapshot
	stale atomic.Bool
}

func (x *rxIndex) Certified(d string) bool         { return x.snap.Certified(d) }
func (x *rxIndex) ByHash(h string) []*igpec.Record { return x.snap.ByHash(h) }
func (x *rxIndex) Stale() bool                     { return x.stale.Load() }

type rxFix struct {
	ca         *hsmtest.CA
	a, b, f, r *peer
	idx        *rxIndex
	st         *breakableStore
	clamd      *clamdtest.Server
	eng        *pec.Engine // provider B
	signer     *breakableSigner
	crl        string
	seq        atomic.Int64
}

func newRxFix(t testing.TB, policy string) *rxFix {
	t.Helper()
	fx := &rxFix{ca: hsmtest.NewCA(t), st: &breakableStore{Memory: storetest.NewMemory()}, clamd: clamdtest.New(t)}
	fx.a = newPeer(t, fx.ca, "Provider A S.p.A.", "pec-a.test")
	fx.b = newPeer(t, fx.ca, "Provider B S.p.A.", "pec-b.test")
	fx.f = newPeer(t, fx.ca, "Provider A S.p.A.", "pec-a.test")
	fx.r = newPeer(t, fx.ca, "Provider R S.p.A.", "pec-r.test")
	fx.idx = &rxIndex{snap: igpec.NewSnapshot("test", time.Now(), fx.a.rec, fx.b.rec, fx.r.rec)}
	fx.crl = filepath.Join(t.TempDir(), "ca.crl")
	fx.writeCRL(t, fx.r.cert.SerialNumber)
	fx.signer = &breakableSigner{Signer: fx.b.bd.Keys}
	fx.eng = fx.engine(t, fx.b, fx.signer, policy, []string{fx.crl})
	return fx
}

// engine is the engine of provider p as the receiver.
func (fx *rxFix) engine(t testing.TB, p *peer, keys pec.Signer, policy string, crls []string) *pec.Engine {
	t.Helper()
	tr, err := pec.NewTrust(pec.TrustConfig{Anchors: []*x509.Certificate{fx.ca.Cert}, CRLs: crls, SigningWindow: 24 * time.Hour},
		pec.TrustDeps{Index: fx.idx})
	if err != nil {
		t.Fatal(err)
	}
	sc, err := clamd.New(clamd.Config{Addr: fx.clamd.Addr(), Timeout: 2 * time.Second})
	if err != nil {
		t.Fatal(err)
	}
	e, err := pec.New(pec.Config{Identities: []pec.Identity{p.id}, Node: "rx", OrdinaryMail: policy, ConfirmExpiry: time.Hour},
		pec.Deps{Keys: keys, Index: fx.idx, Scanner: sc, Store: fx.st, Trust: tr})
	if err != nil {
		t.Fatal(err)
	}
	return e
}

// writeCRL publishes the CA's CRL revoking serials an hour ago (key compromise).
func (fx *rxFix) writeCRL(t testing.TB, serials ...*big.Int) {
	t.Helper()
	blk, _ := pem.Decode(fx.ca.KeyPEM())
	key, err := x509.ParsePKCS8PrivateKey(blk.Bytes)
	if err != nil {
		t.Fatal(err)
	}
	var revoked []x509.RevocationListEntry
	for _, s := range serials {
		revoked = append(revoked, x509.RevocationListEntry{SerialNumber: s, RevocationTime: time.Now().Add(-time.Hour), ReasonCode: 1})
	}
	now := time.Now()
	der, err := x509.CreateRevocationList(rand.Reader, &x509.RevocationList{Number: big.NewInt(now.Unix()),
		ThisUpdate: now.Add(-time.Minute), NextUpdate: now.Add(24 * time.Hour), RevokedCertificateEntries: revoked},
		fx.ca.Cert, key.(crypto.Signer))
	if err != nil {
		t.Fatal(err)
	}
	if err := os.WriteFile(fx.crl, der, 0o600); err != nil {
		t.Fatal(err)
	}
}

func rxMsg(hdr ...string) []byte {
	return []byte(strings.Join(hdr, "\r\n") + "\r\n\r\nTesto della PEC.\r\n")
}

// tx is a transaction of peer p's user sender to rcpts (all To), with a fresh identificativo.
func (fx *rxFix) tx(t testing.TB, p *peer, sender string, rcpts ...string) (*pec.Transaction, *pec.Original) {
	t.Helper()
	id := p.id.Domain
	n := fx.seq.Add(1)
	orig, err := pec.ParseOriginal(rxMsg("From: "+sender, "To: "+strings.Join(rcpts, ", "),
		"Subject: prova "+big.NewInt(n).String(), "Message-ID: <m"+big.NewInt(n).String()+"@client.example>"))
	if err != nil {
		t.Fatal(err)
	}
	var rs []pec.Recipient
	for _, r := range rcpts {
		typ := daticert.Certificato
		if !fx.idx.Certified(r[strings.IndexByte(r, '@')+1:]) {
			typ = daticert.Esterno
		}
		rs = append(rs, pec.Recipient{Addr: r, Type: typ})
	}
	return pec.NewTransaction("opec"+time.Now().Format("150405")+"."+big.NewInt(n).String()+"@"+id, orig, rs), orig
}

func ref() pec.TimeRef { return pec.NewTimeRef(time.Now().Truncate(time.Second), pec.Rome()) }

// busta is peer p's signed busta of a fresh transaction.
func (fx *rxFix) busta(t testing.TB, p *peer, sender string, rcpts ...string) ([]byte, *pec.Transaction) {
	t.Helper()
	tx, orig := fx.tx(t, p, sender, rcpts...)
	m, err := p.bd.Busta(ref(), tx, orig)
	if err != nil {
		t.Fatal(err)
	}
	return m.Bytes(), tx
}

func (fx *rxFix) receive(t testing.TB, e *pec.Engine, msg []byte, from string, rcpts ...string) (*pec.Received, error) {
	t.Helper()
	return e.Receive(context.Background(), &pec.Incoming{QueueID: "QR1", MailFrom: from, Rcpts: rcpts, Message: msg})
}

func (fx *rxFix) outbox(t testing.TB) []store.OutboxItem {
	t.Helper()
	items, err := fx.st.ClaimOutbox(context.Background(), store.Claim{Owner: "t", Lease: time.Minute, Limit: 1000})
	if err != nil {
		t.Fatal(err)
	}
	return items
}

func (fx *rxFix) events(t testing.TB) []*store.Event {
	t.Helper()
	var out []*store.Event
	if err := fx.st.ScanLog(context.Background(), store.Query{}, func(e *store.Event) error { out = append(out, e); return nil }); err != nil {
		t.Fatal(err)
	}
	return out
}
