package main

import (
	"crypto/ecdsa"
	"crypto/elliptic"
	"crypto/rand"
	"crypto/sha1" //nolint:gosec // vSphere thumbprints are SHA-1 by convention
	"crypto/tls"
	"crypto/x509"
	"crypto/x509/pkix"
	"encoding/hex"
	"encoding/pem"
	"math/big"
	"net"
	"net/http"
	"os"
	"strings"
	"time"
)

// thumbprint returns the SHA-1 thumbprint of a DER certificate in vSphere's form (AA:BB:...).
func thumbprint(der []byte) string {
	sum := sha1.Sum(der) //nolint:gosec
	return colonHex(sum[:])
}

func colonHex(b []byte) string {
	h := strings.ToUpper(hex.EncodeToString(b))
	parts := make([]string, 0, len(h)/2)
	for i := 0; i < len(h); i += 2 {
		parts = append(parts, h[i:i+2])
	}
	return strings.Join(parts, ":")
}

// selfSigned makes a fresh certificate for 127.0.0.1 and localhost, so every lab has its own thumbprint.
func selfSigned() (tls.Certificate, error) {
	key, err := ecdsa.GenerateKey(elliptic.P256(), rand.Reader)
	if err != nil {
		return tls.Certificate{}, err
	}
	serial, _ := rand.Int(rand.Reader, big.NewInt(1<<62))
	tmpl := x509.Certificate{
		SerialNumber: serial,
		Subject:      pkix.Name{CommonName: "127.0.0.1", Organization: []string{"agentvm lab"}},
		NotBefore:    time.Now().Add(-time.Hour),
		NotAfter:     time.Now().Add(365 * 24 * time.Hour),
		KeyUsage:     x509.KeyUsageDigitalSignature | x509.KeyUsageKeyEncipherment,
		ExtKeyUsage:  []x509.ExtKeyUsage{x509.ExtKeyUsageServerAuth},
		IPAddresses:  []net.IP{net.ParseIP("127.0.0.1")},
		DNSNames:     []string{"localhost"},
	}
	der, err := x509.CreateCertificate(rand.Reader, &tmpl, &tmpl, &key.PublicKey, key)
	if err != nil {
		return tls.Certificate{}, err
	}
	return tls.Certificate{Certificate: [][]byte{der}, PrivateKey: key}, nil
}

// peerThumbprint returns the SHA-1 thumbprint and the DER bytes of the TLS client certificate of r, or
// ("", nil) when there is none (plain HTTP, no certificate, or no request).
func peerThumbprint(r *http.Request) (string, []byte) {
	if r == nil || r.TLS == nil || len(r.TLS.PeerCertificates) == 0 {
		return "", nil
	}
	der := r.TLS.PeerCertificates[0].Raw
	return thumbprint(der), der
}

// certificateFile is the certificate kept in path (PEM: the certificate, then its key), made with
// selfSigned and written there (mode 0600) when path does not exist yet: a simulator started again with
// the same file serves the same certificate (a host restart keeps its thumbprint).
func certificateFile(path string) (tls.Certificate, error) {
	if _, err := os.Stat(path); err == nil {
		return tls.LoadX509KeyPair(path, path)
	}
	cert, err := selfSigned()
	if err != nil {
		return cert, err
	}
	key, err := x509.MarshalECPrivateKey(cert.PrivateKey.(*ecdsa.PrivateKey))
	if err != nil {
		return cert, err
	}
	data := pem.EncodeToMemory(&pem.Block{Type: "CERTIFICATE", Bytes: cert.Certificate[0]})
	data = append(data, pem.EncodeToMemory(&pem.Block{Type: "EC PRIVATE KEY", Bytes: key})...)
	tmp := path + ".tmp"
	if err := os.WriteFile(tmp, data, 0o600); err != nil {
		return cert, err
	}
	return cert, os.Rename(tmp, path)
}
