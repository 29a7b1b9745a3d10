package lmtpd

import (
	"bytes"
	"context"
	"encoding/base64"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"net/http"
	"strings"
	"time"
)

// Doveadm asks Dovecot whether a mailbox holds a message, through the doveadm HTTP API
// (doc.dovecot.org "Doveadm HTTP API": POST /doveadm/v1 with a JSON array of commands,
// authenticated with doveadm_api_key). It implements pec.Mailboxes for the delivery point's
// crash recovery: after pec-lmtpd died between Dovecot's answer and its own commit, the
// retry must know whether the first attempt stored the message (pec/delivery.go, "The crash
// window").
//
// The search is "doveadm search -u <user> header Message-ID <id>" over all the user's
// mailboxes (the user may have moved the message since). Dovecot's header search is a
// case-insensitive substring match; a Message-ID with its angle brackets cannot be a
// substring of another Message-ID, and the ids compared here (identificativi, receipt
// Message-IDs) are random or derived from one, so a match is the message. It reads the
// header of each message not yet in the index cache: it is asked only on the rare retry
// that finds an open record, never on the normal path (postfix-conf/README.md has the
// measured cost).
type Doveadm struct {
	url       string
	auth      string
	delimiter string
	client    *http.Client
}

// DoveadmConfig configures the lookup.
type DoveadmConfig struct {
	// URL of the API, e.g. http://127.0.0.1:8080/doveadm/v1.
	URL string
	// APIKey is Dovecot's doveadm_api_key.
	APIKey string
	// RecipientDelimiter separates an address extension (user+ext@domain) that Dovecot's
	// LMTP strips before the user lookup and doveadm does not; default "+" (Dovecot's
	// recipient_delimiter default). "-" for none.
	RecipientDelimiter string
	// Timeout of one lookup; default 30s.
	Timeout time.Duration
}

// NewDoveadm validates cfg.
func NewDoveadm(cfg DoveadmConfig) (*Doveadm, error) {
	if !strings.HasPrefix(cfg.URL, "http://") && !strings.HasPrefix(cfg.URL, "https://") {
		return nil, fmt.Errorf("lmtpd: doveadm url %q: want http:// or https://", cfg.URL)
	}
	if cfg.APIKey == "" {
		return nil, errors.New("lmtpd: doveadm API key missing")
	}
	switch cfg.RecipientDelimiter {
	case "":
		cfg.RecipientDelimiter = "+"
	case "-":
		cfg.RecipientDelimiter = ""
	}
	if cfg.Timeout == 0 {
		cfg.Timeout = 30 * time.Second
	}
	return &Doveadm{url: cfg.URL, auth: "X-Dovecot-API " + base64.StdEncoding.EncodeToString([]byte(cfg.APIKey)),
		delimiter: cfg.RecipientDelimiter, client: &http.Client{Timeout: cfg.Timeout}}, nil
}

// user is the Dovecot user of an envelope recipient: the address without its extension.
func (d *Doveadm) user(rcpt string) string {
	local, domain, ok := strings.Cut(strings.ToLower(strings.TrimSpace(rcpt)), "@")
	if !ok {
		return local
	}
	if d.delimiter != "" {
		if i := strings.Index(local, d.delimiter); i > 0 {
			local = local[:i]
		}
	}
	return local + "@" + domain
}

// exUnknownUser is doveadm's exit code for a user the userdb does not know (EX_NOUSER).
const exUnknownUser = 67

// Holds implements pec.Mailboxes. A user Dovecot does not know holds nothing.
func (d *Doveadm) Holds(ctx context.Context, mailbox, messageID string) (bool, error) {
	cmd := []any{[]any{"search", map[string]any{"user": d.user(mailbox),
		"query": []string{"header", "Message-ID", messageID}}, "s"}}
	body, _ := json.Marshal(cmd)
	req, err := http.NewRequestWithContext(ctx, http.MethodPost, d.url, bytes.NewReader(body))
	if err != nil {
		return false, err
	}
	req.Header.Set("Authorization", d.auth)
	req.Header.Set("Content-Type", "application/json")
	resp, err := d.client.Do(req)
	if err != nil {
		return false, fmt.Errorf("doveadm: %w", err)
	}
	defer resp.Body.Close()
	b, err := io.ReadAll(io.LimitReader(resp.Body, 1<<20))
	if err != nil {
		return false, fmt.Errorf("doveadm: %w", err)
	}
	if resp.StatusCode != http.StatusOK {
		return false, fmt.Errorf("doveadm: HTTP %d", resp.StatusCode)
	}
	return parseSearch(b)
}

// parseSearch reads [["doveadmResponse",[{...},...],"s"]] or [["error",{...},"s"]].
func parseSearch(b []byte) (bool, error) {
	var out [][]json.RawMessage
	if err := json.Unmarshal(b, &out); err != nil || len(out) != 1 || len(out[0]) < 2 {
		return false, fmt.Errorf("doveadm: unexpected answer %.200q", b)
	}
	var kind string
	if err := json.Unmarshal(out[0][0], &kind); err != nil {
		return false, fmt.Errorf("doveadm: unexpected answer %.200q", b)
	}
	switch kind {
	case "doveadmResponse":
		var hits []map[string]any
		if err := json.Unmarshal(out[0][1], &hits); err != nil {
			return false, fmt.Errorf("doveadm: unexpected answer %.200q", b)
		}
		return len(hits) > 0, nil
	case "error":
		var e struct {
			Type     string `json:"type"`
			ExitCode int    `json:"exitCode"`
		}
		_ = json.Unmarshal(out[0][1], &e)
		if e.ExitCode == exUnknownUser {
			return false, nil
		}
		return false, fmt.Errorf("doveadm: search failed (%s %d)", e.Type, e.ExitCode)
	}
	return false, fmt.Errorf("doveadm: unexpected answer %.200q", b)
}
