package leveetest

import (
	"crypto/ecdsa"
	"crypto/elliptic"
	"crypto/rand"
	"crypto/tls"
	"crypto/x509"
	"crypto/x509/pkix"
	"encoding/pem"
	"math/big"
	"net"
	"os"
	"path/filepath"
	"testing"
	"time"

	"github.com/nats-io/nats-server/v2/server"
	"github.com/stretchr/testify/require"
)

// SecureServer is an embedded NATS server that requires TLS and a user/password.
type SecureServer struct {
	URL      string // tls://127.0.0.1:port
	CAFile   string // the CA that signed the server's certificate
	User     string
	Password string
}

// StartSecureEmbedded starts a NATS server with JetStream on loopback that requires TLS (a
// certificate for 127.0.0.1 from a throwaway CA) and the user/password it returns. It stops at
// cleanup.
func StartSecureEmbedded(t testing.TB) SecureServer {
	t.Helper()
	dir := t.TempDir()
	caCert, caKey := newCert(t, nil, nil, "levee test CA", true)
	srvCert, srvKey := newCert(t, caCert, caKey, "127.0.0.1", false)
	caFile := writePEM(t, dir, "ca.pem", "CERTIFICATE", caCert.Raw)
	certFile := writePEM(t, dir, "server.pem", "CERTIFICATE", srvCert.Raw)
	keyDER, err := x509.MarshalECPrivateKey(srvKey)
	require.NoError(t, err)
	keyFile := writePEM(t, dir, "server-key.pem", "EC PRIVATE KEY", keyDER)

	tlsCfg, err := server.GenTLSConfig(&server.TLSConfigOpts{CertFile: certFile, KeyFile: keyFile, CaFile: caFile})
	require.NoError(t, err)
	tlsCfg.MinVersion = tls.VersionTLS12
	s, err := server.NewServer(&server.Options{
		Host: "127.0.0.1", Port: -1, JetStream: true, StoreDir: filepath.Join(dir, "js"),
		NoLog: true, NoSigs: true, TLS: true, TLSConfig: tlsCfg, TLSTimeout: 2,
		Username: "levee", Password: "s3cret-pass",
	})
	require.NoError(t, err)
	go s.Start()
	require.True(t, s.ReadyForConnections(10*time.Second), "secure NATS server not ready")
	t.Cleanup(s.Shutdown)
	addr := s.Addr().(*net.TCPAddr)
	return SecureServer{URL: "tls://127.0.0.1:" + itoa(addr.Port), CAFile: caFile, User: "levee", Password: "s3cret-pass"}
}

func newCert(t testing.TB, parent *x509.Certificate, parentKey *ecdsa.PrivateKey, cn string, isCA bool) (*x509.Certificate, *ecdsa.PrivateKey) {
	t.Helper()
	key, err := ecdsa.GenerateKey(elliptic.P256(), rand.Reader)
	require.NoError(t, err)
	serial, err := rand.Int(rand.Reader, big.NewInt(1<<62))
	require.NoError(t, err)
	tmpl := &x509.Certificate{
		SerialNumber: serial, Subject: pkix.Name{CommonName: cn},
		NotBefore: time.Now().Add(-time.Hour), NotAfter: time.Now().Add(24 * time.Hour),
		KeyUsage: x509.KeyUsageDigitalSignature | x509.KeyUsageCertSign,
	}
	if isCA {
		tmpl.IsCA, tmpl.BasicConstraintsValid = true, true
		parent, parentKey = tmpl, key
	} else {
		tmpl.ExtKeyUsage = []x509.ExtKeyUsage{x509.ExtKeyUsageServerAuth}
		tmpl.IPAddresses = []net.IP{net.ParseIP("127.0.0.1")}
	}
	der, err := x509.CreateCertificate(rand.Reader, tmpl, parent, &key.PublicKey, parentKey)
	require.NoError(t, err)
	cert, err := x509.ParseCertificate(der)
	require.NoError(t, err)
	return cert, key
}

func writePEM(t testing.TB, dir, name, typ string, der []byte) string {
	t.Helper()
	p := filepath.Join(dir, name)
	require.NoError(t, os.WriteFile(p, pem.EncodeToMemory(&pem.Block{Type: typ, Bytes: der}), 0o600))
	return p
}

func itoa(n int) string { return big.NewInt(int64(n)).String() }
