package client

import (
	"google.golang.org/grpc"
	"google.golang.org/grpc/credentials"

	"github.com/streamgate/streamgate/internal/tlsconf"
)

// TLS says how to reach a node that serves TLS.
type TLS struct {
	// CAFile is a PEM bundle of the CAs that sign the nodes' certificates;
	// empty: the system's roots.
	CAFile string
	// CertFile and KeyFile are a client certificate and its key (PEM), for
	// nodes that ask for one (mTLS); both or neither.
	CertFile, KeyFile string
	// ServerName is the name the nodes' certificate must carry; empty: the
	// host of the address dialed.
	ServerName string
}

// WithTLS is the Dial option that connects over TLS; its files are read
// now. It replaces DefaultDialOptions' plaintext:
//
//	opt, err := client.WithTLS(client.TLS{CAFile: "ca.pem"})
//	...
//	c, err := client.Dial("gw.example.com:50051", opt)
func WithTLS(t TLS) (grpc.DialOption, error) {
	cfg, err := tlsconf.Client{CAFile: t.CAFile, CertFile: t.CertFile, KeyFile: t.KeyFile, ServerName: t.ServerName}.Config()
	if err != nil {
		return nil, err
	}
	return grpc.WithTransportCredentials(credentials.NewTLS(cfg)), nil
}
