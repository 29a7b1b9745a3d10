// Package lab reads the description of the two-provider lab that integration/scripts/lab-up.sh
// writes to $PEC_LAB/lab.json (default /tmp/pec-lab/lab.json). Every test and tool that talks to
// the lab finds addresses, ports, users, certificates and sockets here; nothing else hard-codes
// them.
package lab

import (
	"encoding/json"
	"fmt"
	"os"
	"path/filepath"
)

// DefaultBase is the lab's base directory when PEC_LAB is not set. It is short on purpose:
// unix socket paths (Dovecot, the milter) are limited to 108 bytes.
const DefaultBase = "/tmp/pec-lab"

// Lab is the whole lab as lab.json describes it.
type Lab struct {
	Base      string      `json:"base"`
	CA        CA          `json:"ca"`
	Providers []*Provider `json:"providers"` // "a" and "b": PEC providers
	Ordinary  *Provider   `json:"ordinary"`  // a plain, non-PEC mail domain ("the Internet")
	Signers   []*Signer   `json:"signers"`   // extra test signers: a forger of A, a revoked provider
	LDAP      LDAP        `json:"ldap"`
	Clamd     Clamd       `json:"clamd"`
	SoftHSM   SoftHSM     `json:"softhsm"`
	Wiring    string      `json:"wiring"` // "plain" or "pec"
	Store     string      `json:"store"`  // PEC_STORE: "sqlite" or "postgres" (provider A's store)
	ANodes    int         `json:"a_nodes"`
	TSA       TSA         `json:"tsa"`
}

// TSA is the lab's RFC 3161 test time-stamping authority (pecctl tsa serve), which
// timestamps the daily seal of each provider's legal log. Every field is empty when the lab
// started without bin/pecctl: then no TSA runs and pec.yaml has no seal: section.
type TSA struct {
	URL     string `json:"url"` // http://127.0.0.1:3180/ (seal.tsa_url)
	CA      string `json:"ca"`  // PEM trust anchor (seal.tsa_ca)
	Log     string `json:"log"`
	PIDFile string `json:"pid_file"`
}

// CA is the lab CA standing in for AgID CA1.
type CA struct {
	Cert string `json:"cert"` // PEM path
	Key  string `json:"key"`  // PEM path (lab only)

	// The lab's chain mirrors "Actalis root -> AgID CA1 -> provider" (pec-spec §8.2): Cert is
	// the self-signed root (the trust anchor), Intermediate the CA that issued the provider
	// certificates (it is in each provider's CertChain, the root never is).
	Intermediate    string `json:"intermediate"`     // PEM path
	IntermediateKey string `json:"intermediate_key"` // PEM path (lab only)
	// CRL is the CRL the intermediate publishes (PEM; trust.crls of every pec.yaml): it revokes
	// the certificate of the revoked test signer.
	CRL string `json:"crl"`
}

// Signer is an extra test signer: a certificate from the lab's intermediate with the provider
// profile and a software key (lab only), for messages no lab provider would send. "f" forges
// provider A (its name and service address; not in the index), "r" is Provider R (in the index,
// revoked by the CRL; its mailReceipt is a mailbox of the ordinary system O).
type Signer struct {
	ID             string `json:"id"`
	Name           string `json:"name"`
	ServiceAddress string `json:"service_address"`
	Domain         string `json:"domain"`
	ReceiptAddress string `json:"receipt_address"` // mailReceipt in the index, when listed
	Cert           string `json:"cert"`            // PEM
	Key            string `json:"key"`             // PEM private key (lab only)
	CertChain      string `json:"cert_chain"`      // the certificate then the intermediate
	CertSHA1       string `json:"cert_sha1"`
	Listed         bool   `json:"listed"`  // in the providers index
	Revoked        bool   `json:"revoked"` // on the CRL
}

// Signer returns the extra test signer with the given id ("f" or "r").
func (l *Lab) Signer(id string) (*Signer, error) {
	for _, s := range l.Signers {
		if s.ID == id {
			return s, nil
		}
	}
	return nil, fmt.Errorf("lab: no test signer %q (lab.json predates them: run lab-up again)", id)
}

// Provider is one mail system of the lab: a Postfix instance, its Dovecot, and (for PEC
// providers) its signing token and certificate.
type Provider struct {
	ID             string `json:"id"`              // "a", "b", "o"
	Name           string `json:"name"`            // providerName / gestore-emittente
	IP             string `json:"ip"`              // 127.0.0.10, ...
	Domain         string `json:"domain"`          // the mail domain served
	ServiceAddress string `json:"service_address"` // From of system messages; cert SAN
	ReceiptAddress string `json:"receipt_address"` // mailReceipt in the index
	Postfix        struct {
		ConfigDir  string `json:"config_dir"` // for postfix -c
		MX         string `json:"mx"`         // host:port, port 25, STARTTLS offered
		Submission string `json:"submission"` // host:port, port 587, STARTTLS + AUTH required
		Reinject   string `json:"reinject"`   // unix:/path of the pec-reinject socket, no milters
		Maillog    string `json:"maillog"`
		TLSCert    string `json:"tls_cert"` // self-signed certificate of :25 and :587 (PEM)
		Delivery   string `json:"delivery"` // virtual_transport: pec-lmtpd or Dovecot LMTP
	} `json:"postfix"`
	Dovecot struct {
		ConfigFile string `json:"config_file"`
		IMAP       string `json:"imap"` // host:port, plaintext login allowed on loopback
		LMTP       string `json:"lmtp"` // unix:/path of Dovecot's LMTP socket
		Log        string `json:"log"`
		AuthSocket string `json:"auth_socket"` // SASL socket Postfix uses (smtpd_sasl_path)
		// Doveadm is the doveadm HTTP API (http://host:8080/doveadm/v1) pec-lmtpd's crash
		// recovery asks; DoveadmKeyFile holds its doveadm_api_key, byte for byte.
		Doveadm        string `json:"doveadm"`
		DoveadmKeyFile string `json:"doveadm_key_file"`
	} `json:"dovecot"`
	MilterSocket string `json:"milter_socket"` // unix socket pec-milter listens on; empty unless it runs (PEC wiring)
	LMTPD        string `json:"lmtpd"`         // unix:/path pec-lmtpd listens on; empty unless it runs (PEC wiring)
	LMTPDMetrics string `json:"lmtpd_metrics"` // http://host:port of pec-lmtpd's /metrics and /readyz; empty unless it runs
	Users        []User `json:"users"`         // mailboxes, including the service mailbox
	Token        *Token `json:"token,omitempty"`
	Cert         string `json:"cert,omitempty"`        // provider signing certificate, PEM
	CertSHA1     string `json:"cert_sha1,omitempty"`   // upper-case hex SHA-1 of the DER
	ConfigFile   string `json:"config_file,omitempty"` // pec YAML config for this provider
	CertChain    string `json:"cert_chain,omitempty"`  // signer cert then intermediates, PEM

	// Logs maps a component ("postfix", "dovecot", "pec-milter", "pec-lmtpd") to its log file.
	Logs map[string]string `json:"logs,omitempty"`

	// Nodes are the provider's nodes, itself first, with the PEC wiring (PEC_A_NODES=2 gives A a
	// second one, lab-nodes.sh); empty otherwise.
	Nodes []*Node `json:"nodes,omitempty"`
}

// Node is one node of a PEC provider: its own Postfix instance, pec-milter and pec-lmtpd on
// its own address, sharing the provider's store, Dovecot, token and certificate.
type Node struct {
	ID      string `json:"id"`   // "a", "a2": its directory under Base
	Name    string `json:"name"` // node: of its pec.yaml ("" for a provider's only node)
	IP      string `json:"ip"`
	RunDir  string `json:"run_dir"` // sockets and PID files (pec-milter.pid, pec-lmtpd.pid)
	Postfix struct {
		ConfigDir  string `json:"config_dir"`
		MX         string `json:"mx"`
		Submission string `json:"submission"`
		Reinject   string `json:"reinject"`
		Maillog    string `json:"maillog"`
		TLSCert    string `json:"tls_cert"` // the node's own self-signed certificate (CN mx.<domain>)
	} `json:"postfix"`
	MilterSocket string            `json:"milter_socket"`
	LMTPD        string            `json:"lmtpd"`
	Metrics      string            `json:"metrics"`       // http://ip:9100 of pec-milter (/metrics, /readyz)
	LMTPDMetrics string            `json:"lmtpd_metrics"` // http://ip:9101 of pec-lmtpd
	ConfigFile   string            `json:"config_file"`
	Logs         map[string]string `json:"logs"`
}

// User is a mailbox with its password (SASL on submission, IMAP login).
type User struct {
	Address  string `json:"address"`
	Password string `json:"password"`
	Quota    string `json:"quota,omitempty"` // Dovecot storage quota ("1K"), "" for none
}

// Token is the provider's SoftHSM2 token; the private key was generated on it.
type Token struct {
	Label    string `json:"label"`
	PIN      string `json:"pin"`
	SOPIN    string `json:"so_pin"`
	KeyLabel string `json:"key_label"`
	KeyID    string `json:"key_id"` // hex
}

// LDAP is the slapd holding the providers index.
type LDAP struct {
	URL      string `json:"url"`     // ldap://127.0.0.1:3890
	BaseDN   string `json:"base_dn"` // o=postacert
	BindDN   string `json:"bind_dn"`
	Password string `json:"password"`
	LDIF     string `json:"ldif"` // the LDIF loaded into it
	PIDFile  string `json:"pid_file"`
	Log      string `json:"log"`
}

// Clamd is the ClamAV daemon with the lab's test signatures.
type Clamd struct {
	Addr string `json:"addr"` // host:port for INSTREAM
	Log  string `json:"log"`
}

// SoftHSM is the SoftHSM2 installation shared by the providers' tokens.
type SoftHSM struct {
	Conf   string `json:"conf"`   // value for SOFTHSM2_CONF
	Module string `json:"module"` // /usr/lib/softhsm/libsofthsm2.so
}

// Path is the location of lab.json.
func Path() string {
	base := os.Getenv("PEC_LAB")
	if base == "" {
		base = DefaultBase
	}
	return filepath.Join(base, "lab.json")
}

// Load reads lab.json. It fails when the lab is not up.
func Load() (*Lab, error) {
	p := Path()
	b, err := os.ReadFile(p)
	if err != nil {
		return nil, fmt.Errorf("lab: %w (run `make lab-up` first)", err)
	}
	var l Lab
	if err := json.Unmarshal(b, &l); err != nil {
		return nil, fmt.Errorf("lab: %s: %w", p, err)
	}
	return &l, nil
}

// Provider returns the provider with the given id ("a", "b" or "o").
func (l *Lab) Provider(id string) (*Provider, error) {
	if l.Ordinary != nil && l.Ordinary.ID == id {
		return l.Ordinary, nil
	}
	for _, p := range l.Providers {
		if p.ID == id {
			return p, nil
		}
	}
	return nil, fmt.Errorf("lab: no provider %q", id)
}
