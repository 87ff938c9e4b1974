// Package certgen makes a certificate authority and the certificates it
// signs, with ECDSA P-256 keys, for the tests and for the TLS variant of the
// Docker deployment. It is a convenience, not a PKI: the keys are written
// unencrypted, and nothing is ever revoked.
package certgen

import (
	"crypto/ecdsa"
	"crypto/elliptic"
	"crypto/rand"
	"crypto/x509"
	"crypto/x509/pkix"
	"encoding/pem"
	"fmt"
	"math/big"
	"net"
	"time"
)

// DefaultValidity is how long certificates are valid when nothing else is asked.
const DefaultValidity = 365 * 24 * time.Hour

// CA is a certificate authority: a self-signed certificate and its key.
type CA struct {
	cert *x509.Certificate
	key  *ecdsa.PrivateKey
	// CertPEM is the CA's certificate, PEM-encoded: what a peer trusts.
	CertPEM []byte
}

// NewCA makes a certificate authority named name, valid for validity (zero
// means DefaultValidity).
func NewCA(name string, validity time.Duration) (*CA, error) {
	key, err := ecdsa.GenerateKey(elliptic.P256(), rand.Reader)
	if err != nil {
		return nil, fmt.Errorf("make CA %q: generate key: %w", name, err)
	}
	serial, err := newSerial()
	if err != nil {
		return nil, fmt.Errorf("make CA %q: %w", name, err)
	}
	notBefore, notAfter := window(time.Time{}, time.Time{}, validity)
	template := &x509.Certificate{
		SerialNumber:          serial,
		Subject:               pkix.Name{CommonName: name},
		NotBefore:             notBefore,
		NotAfter:              notAfter,
		KeyUsage:              x509.KeyUsageCertSign | x509.KeyUsageCRLSign | x509.KeyUsageDigitalSignature,
		BasicConstraintsValid: true,
		IsCA:                  true,
		MaxPathLenZero:        true,
	}
	der, err := x509.CreateCertificate(rand.Reader, template, template, &key.PublicKey, key)
	if err != nil {
		return nil, fmt.Errorf("make CA %q: sign: %w", name, err)
	}
	cert, err := x509.ParseCertificate(der)
	if err != nil {
		return nil, fmt.Errorf("make CA %q: %w", name, err)
	}
	return &CA{cert: cert, key: key, CertPEM: encodeCert(der)}, nil
}

// Leaf describes a certificate for a server, a client or both.
type Leaf struct {
	// CommonName is the subject's name. etcd takes it as the user name of a
	// client that authenticates by certificate.
	CommonName string
	// DNSNames and IPs are the names a server certificate is valid for.
	DNSNames []string
	IPs      []net.IP
	// Server and Client choose the extended key usages; a certificate may
	// have both, as an etcd member's does.
	Server, Client bool
	// Validity is how long the certificate is valid from now; zero means
	// DefaultValidity. NotBefore and NotAfter, when set, win: a test sets
	// them to make an expired certificate.
	Validity            time.Duration
	NotBefore, NotAfter time.Time
}

// Pair is a certificate and its private key, both PEM-encoded.
type Pair struct {
	CertPEM, KeyPEM []byte
}

// Issue makes a new key and a certificate for it signed by ca.
func (ca *CA) Issue(leaf Leaf) (Pair, error) {
	key, err := ecdsa.GenerateKey(elliptic.P256(), rand.Reader)
	if err != nil {
		return Pair{}, fmt.Errorf("issue %q: generate key: %w", leaf.CommonName, err)
	}
	serial, err := newSerial()
	if err != nil {
		return Pair{}, fmt.Errorf("issue %q: %w", leaf.CommonName, err)
	}
	notBefore, notAfter := window(leaf.NotBefore, leaf.NotAfter, leaf.Validity)
	template := &x509.Certificate{
		SerialNumber: serial,
		Subject:      pkix.Name{CommonName: leaf.CommonName},
		NotBefore:    notBefore,
		NotAfter:     notAfter,
		KeyUsage:     x509.KeyUsageDigitalSignature,
		DNSNames:     leaf.DNSNames,
		IPAddresses:  leaf.IPs,
	}
	if leaf.Server {
		template.ExtKeyUsage = append(template.ExtKeyUsage, x509.ExtKeyUsageServerAuth)
	}
	if leaf.Client {
		template.ExtKeyUsage = append(template.ExtKeyUsage, x509.ExtKeyUsageClientAuth)
	}
	der, err := x509.CreateCertificate(rand.Reader, template, ca.cert, &key.PublicKey, ca.key)
	if err != nil {
		return Pair{}, fmt.Errorf("issue %q: sign: %w", leaf.CommonName, err)
	}
	keyDER, err := x509.MarshalPKCS8PrivateKey(key)
	if err != nil {
		return Pair{}, fmt.Errorf("issue %q: encode key: %w", leaf.CommonName, err)
	}
	return Pair{
		CertPEM: encodeCert(der),
		KeyPEM:  pem.EncodeToMemory(&pem.Block{Type: "PRIVATE KEY", Bytes: keyDER}),
	}, nil
}

// window is the validity period: from an hour ago, so that a peer whose
// clock is a little behind accepts the certificate at once, to validity
// from now, unless the caller set either end.
func window(notBefore, notAfter time.Time, validity time.Duration) (time.Time, time.Time) {
	now := time.Now()
	if validity <= 0 {
		validity = DefaultValidity
	}
	if notBefore.IsZero() {
		notBefore = now.Add(-time.Hour)
	}
	if notAfter.IsZero() {
		notAfter = now.Add(validity)
	}
	return notBefore, notAfter
}

func newSerial() (*big.Int, error) {
	serial, err := rand.Int(rand.Reader, new(big.Int).Lsh(big.NewInt(1), 127))
	if err != nil {
		return nil, fmt.Errorf("serial number: %w", err)
	}
	return serial, nil
}

func encodeCert(der []byte) []byte {
	return pem.EncodeToMemory(&pem.Block{Type: "CERTIFICATE", Bytes: der})
}
