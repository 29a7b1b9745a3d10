package tsa

import (
	"crypto"
	"crypto/x509/pkix"
	"encoding/asn1"
	"errors"
	"fmt"
	"math/big"
	"time"
)

// The ASN.1 of RFC 3161 (time-stamp protocol), encoded with encoding/asn1. The token itself
// is a CMS SignedData, signed and verified by pec/smime.

var (
	oidTSTInfo = asn1.ObjectIdentifier{1, 2, 840, 113549, 1, 9, 16, 1, 4} // RFC 3161 §2.4.2 id-ct-TSTInfo
	// RFC 2634 §5.4 id-aa-signingCertificate and RFC 5035 §3 id-aa-signingCertificateV2: the
	// ESS attribute that binds the TSA certificate to the token (RFC 3161 §2.4.1, RFC 5816).
	oidSigningCertificate   = asn1.ObjectIdentifier{1, 2, 840, 113549, 1, 9, 16, 2, 12}
	oidSigningCertificateV2 = asn1.ObjectIdentifier{1, 2, 840, 113549, 1, 9, 16, 2, 47}
	oidEKU                  = asn1.ObjectIdentifier{2, 5, 29, 37}

	oidSHA1   = asn1.ObjectIdentifier{1, 3, 14, 3, 2, 26}
	oidSHA256 = asn1.ObjectIdentifier{2, 16, 840, 1, 101, 3, 4, 2, 1}
	oidSHA384 = asn1.ObjectIdentifier{2, 16, 840, 1, 101, 3, 4, 2, 2}
	oidSHA512 = asn1.ObjectIdentifier{2, 16, 840, 1, 101, 3, 4, 2, 3}
)

var hashOIDs = map[crypto.Hash]asn1.ObjectIdentifier{
	crypto.SHA1: oidSHA1, crypto.SHA256: oidSHA256, crypto.SHA384: oidSHA384, crypto.SHA512: oidSHA512,
}

func hashOf(a pkix.AlgorithmIdentifier) (crypto.Hash, bool) {
	// RFC 5754 §2: the parameters are absent or NULL.
	if len(a.Parameters.FullBytes) != 0 && (a.Parameters.Tag != asn1.TagNull || len(a.Parameters.Bytes) != 0) {
		return 0, false
	}
	for h, oid := range hashOIDs {
		if oid.Equal(a.Algorithm) {
			return h, true
		}
	}
	return 0, false
}

// request is TimeStampReq (RFC 3161 §2.4.1).
type request struct {
	Version        int
	MessageImprint asn1.RawValue         // kept as received: the TSTInfo repeats it (RFC 3161 §2.4.2)
	ReqPolicy      asn1.ObjectIdentifier `asn1:"optional"`
	Nonce          *big.Int              `asn1:"optional"`
	CertReq        bool                  `asn1:"optional"` // DEFAULT FALSE: omitted when false
	Extensions     []pkix.Extension      `asn1:"optional,tag:0"`
}

// messageImprint is MessageImprint (RFC 3161 §2.4.1).
type messageImprint struct {
	HashAlgorithm pkix.AlgorithmIdentifier
	HashedMessage []byte
}

func (m messageImprint) hash() (crypto.Hash, error) {
	h, ok := hashOf(m.HashAlgorithm)
	if !ok {
		return 0, fmt.Errorf("unsupported imprint algorithm %v", m.HashAlgorithm.Algorithm)
	}
	if len(m.HashedMessage) != h.Size() {
		return 0, errors.New("imprint length does not match its hash")
	}
	return h, nil
}

// marshalRequest makes a TimeStampReq for digest (its hash h), asking for the TSA
// certificate in the token (certReq) so that the token verifies on its own.
func marshalRequest(h crypto.Hash, digest []byte, nonce *big.Int) ([]byte, error) {
	// The NULL parameters are what OpenSSL writes; RFC 5754 §2 has receivers accept both.
	mi, err := asn1.Marshal(messageImprint{HashAlgorithm: pkix.AlgorithmIdentifier{Algorithm: hashOIDs[h],
		Parameters: asn1.NullRawValue}, HashedMessage: digest})
	if err != nil {
		return nil, err
	}
	return asn1.Marshal(request{Version: 1, MessageImprint: asn1.RawValue{FullBytes: mi}, Nonce: nonce, CertReq: true})
}

func parseRequest(der []byte) (*request, *messageImprint, error) {
	var req request
	if rest, err := asn1.Unmarshal(der, &req); err != nil || len(rest) != 0 {
		return nil, nil, fmt.Errorf("TimeStampReq: %v (%d bytes after it)", err, len(rest))
	}
	if req.Version != 1 {
		return nil, nil, fmt.Errorf("TimeStampReq version %d", req.Version)
	}
	var mi messageImprint
	if rest, err := asn1.Unmarshal(req.MessageImprint.FullBytes, &mi); err != nil || len(rest) != 0 {
		return nil, nil, fmt.Errorf("messageImprint: %v", err)
	}
	return &req, &mi, nil
}

// response is TimeStampResp (RFC 3161 §2.4.2).
type response struct {
	Status         pkiStatusInfo
	TimeStampToken asn1.RawValue `asn1:"optional"` // a ContentInfo holding SignedData
}

// pkiStatusInfo is PKIStatusInfo (RFC 3161 §2.4.2).
type pkiStatusInfo struct {
	Status       int
	StatusString []asn1.RawValue `asn1:"optional"` // PKIFreeText: SEQUENCE OF UTF8String
	FailInfo     asn1.BitString  `asn1:"optional"`
}

// PKIStatus values and PKIFailureInfo bits (RFC 3161 §2.4.2).
const (
	statusGranted         = 0
	statusGrantedWithMods = 1
	statusRejection       = 2

	failBadAlg              = 0
	failBadRequest          = 2
	failBadDataFormat       = 5
	failUnacceptedPolicy    = 15
	failUnacceptedExtension = 16
)

// errorResponse is a rejection with one PKIFailureInfo bit set.
func errorResponse(bit int) []byte {
	b := make([]byte, bit/8+1)
	b[bit/8] = 0x80 >> (bit % 8)
	// DER named bit list: no trailing zero bits (X.690 §11.2.2).
	resp, _ := asn1.Marshal(response{Status: pkiStatusInfo{Status: statusRejection,
		FailInfo: asn1.BitString{Bytes: b, BitLength: bit + 1}}})
	return resp
}

// tstInfo is TSTInfo (RFC 3161 §2.4.2).
type tstInfo struct {
	Version        int
	Policy         asn1.ObjectIdentifier
	MessageImprint asn1.RawValue
	SerialNumber   *big.Int
	GenTime        time.Time        `asn1:"generalized"`
	Accuracy       accuracy         `asn1:"optional"`
	Ordering       bool             `asn1:"optional"` // DEFAULT FALSE
	Nonce          *big.Int         `asn1:"optional"`
	TSA            asn1.RawValue    `asn1:"optional,tag:0"` // [0] GeneralName, kept whole
	Extensions     []pkix.Extension `asn1:"optional,tag:1"`
}

// accuracy is Accuracy (RFC 3161 §2.4.2).
type accuracy struct {
	Seconds int `asn1:"optional"`
	Millis  int `asn1:"optional,tag:0"`
	Micros  int `asn1:"optional,tag:1"`
}

func (a accuracy) duration() time.Duration {
	return time.Duration(a.Seconds)*time.Second + time.Duration(a.Millis)*time.Millisecond + time.Duration(a.Micros)*time.Microsecond
}

func parseTSTInfo(der []byte) (*tstInfo, *messageImprint, error) {
	var info tstInfo
	if rest, err := asn1.Unmarshal(der, &info); err != nil || len(rest) != 0 {
		return nil, nil, fmt.Errorf("TSTInfo: %v (%d bytes after it)", err, len(rest))
	}
	if info.Version != 1 {
		return nil, nil, fmt.Errorf("TSTInfo version %d", info.Version)
	}
	var mi messageImprint
	if rest, err := asn1.Unmarshal(info.MessageImprint.FullBytes, &mi); err != nil || len(rest) != 0 {
		return nil, nil, fmt.Errorf("TSTInfo messageImprint: %v", err)
	}
	return &info, &mi, nil
}

// essCertIDv2 is ESSCertIDv2 (RFC 5035 §4); the hash algorithm defaults to SHA-256.
type essCertIDv2 struct {
	HashAlgorithm pkix.AlgorithmIdentifier `asn1:"optional"`
	CertHash      []byte
	IssuerSerial  asn1.RawValue `asn1:"optional"`
}

type signingCertificateV2 struct {
	Certs    []essCertIDv2
	Policies asn1.RawValue `asn1:"optional"`
}

// essCertID is ESSCertID (RFC 2634 §5.4.1): a SHA-1 hash of the certificate.
type essCertID struct {
	CertHash     []byte
	IssuerSerial asn1.RawValue `asn1:"optional"`
}

type signingCertificate struct {
	Certs    []essCertID
	Policies asn1.RawValue `asn1:"optional"`
}
