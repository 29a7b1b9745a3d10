package hsm

import (
	"errors"
	"fmt"
	"net/url"
	"strings"
)

// URI is the part of an RFC 7512 pkcs11: URI the signer uses.
type URI struct {
	Token      string // token=
	Object     string // object= (CKA_LABEL)
	ID         []byte // id= (CKA_ID, percent-encoded bytes)
	Type       string // type= (private, cert, ...)
	ModulePath string // module-path= (query)
	PINSource  string // pin-source= (query), a file path; "file:" is stripped
}

// ParseURI parses an RFC 7512 PKCS#11 URI such as
//
//	pkcs11:token=provider-a;object=provider-a;id=%01?module-path=/usr/lib/softhsm/libsofthsm2.so&pin-source=file:/etc/gestore/pin
//
// Path attributes are separated by ';', query attributes by '&', values are percent-decoded
// (RFC 7512 §2.3). pin-value is refused: the PIN never lives in the configuration. Attributes
// that only narrow the token choice (manufacturer, model, serial, library-*, slot-*) are
// accepted and ignored; the token label is what selects the token. Unknown non-vendor
// attributes are errors, so a typo does not silently select another key.
func ParseURI(s string) (*URI, error) {
	rest, ok := strings.CutPrefix(s, "pkcs11:")
	if !ok {
		return nil, errors.New("uri: must start with pkcs11")
	}
	path, query, _ := strings.Cut(rest, "?")
	u := &URI{}
	for _, kv := range split(path, ';') {
		k, v, err := uriAttr(kv)
		if err != nil {
			return nil, err
		}
		switch k {
		case "token":
			u.Token = v
		case "object":
			u.Object = v
		case "id":
			u.ID = []byte(v)
		case "type":
			u.Type = v
		case "manufacturer", "model", "serial", "library-manufacturer", "library-description",
			"library-version", "slot-manufacturer", "slot-description", "slot-id":
		default:
			if !strings.HasPrefix(k, "x-") {
				return nil, fmt.Errorf("uri: unknown path attribute %q", k)
			}
		}
	}
	for _, kv := range split(query, '&') {
		k, v, err := uriAttr(kv)
		if err != nil {
			return nil, err
		}
		switch k {
		case "module-path":
			u.ModulePath = v
		case "pin-source":
			// RFC 7512 §2.3: pin-source is a URI; only local files are supported.
			if f, ok := strings.CutPrefix(v, "file:"); ok {
				v = strings.TrimPrefix(f, "//")
			} else if strings.Contains(v, ":") {
				return nil, fmt.Errorf("uri: pin-source %q: only file: is supported", v)
			}
			u.PINSource = v
		case "pin-value":
			return nil, fmt.Errorf("uri: pin-value is refused: give the PIN in a file (pin-source) or an environment variable (pin_env)")
		case "module-name":
			return nil, fmt.Errorf("uri: module-name is not supported: use module-path")
		default:
			if !strings.HasPrefix(k, "x-") {
				return nil, fmt.Errorf("uri: unknown query attribute %q", k)
			}
		}
	}
	if u.Type != "" && u.Type != "private" {
		return nil, fmt.Errorf("uri: type=%s: the signer needs type=private", u.Type)
	}
	return u, nil
}

func split(s string, sep byte) []string {
	if s == "" {
		return nil
	}
	return strings.Split(s, string(sep))
}

func uriAttr(kv string) (string, string, error) {
	k, v, ok := strings.Cut(kv, "=")
	if !ok || k == "" {
		return "", "", fmt.Errorf("uri: attribute %q: want name=value", kv)
	}
	dv, err := url.PathUnescape(v)
	if err != nil {
		return "", "", fmt.Errorf("uri: attribute %s: %v", k, err)
	}
	return strings.ToLower(k), dv, nil
}
