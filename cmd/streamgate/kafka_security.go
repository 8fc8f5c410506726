package main

// The flags of TLS and SASL to Kafka brokers. The password comes from a
// file or the environment, never from a flag (ps shows flags), and is
// never logged (kafka.SASL prints without it).

import (
	"flag"
	"fmt"
	"os"
	"strings"

	"github.com/streamgate/streamgate/broker/kafka"
)

// kafkaPasswordEnv holds the SASL password when no file is named.
const kafkaPasswordEnv = "STREAMGATE_KAFKA_SASL_PASSWORD"

// kafkaSecurity is what the --kafka-tls* and --kafka-sasl-* flags set.
type kafkaSecurity struct {
	tls          bool
	files        kafka.TLSFiles
	mechanism    string
	user         string
	passwordFile string
}

func (k *kafkaSecurity) register(fs *flag.FlagSet) {
	fs.BoolVar(&k.tls, "kafka-tls", false, "connect to the Kafka brokers with TLS (implied by the other --kafka-tls-* flags)")
	fs.StringVar(&k.files.CAFile, "kafka-tls-ca", "", "PEM file of the CA certificates that sign the brokers' certificates (default: the system's)")
	fs.StringVar(&k.files.CertFile, "kafka-tls-cert", "", "PEM client certificate for brokers that require mTLS (with --kafka-tls-key)")
	fs.StringVar(&k.files.KeyFile, "kafka-tls-key", "", "PEM private key of --kafka-tls-cert")
	fs.StringVar(&k.files.ServerName, "kafka-tls-server-name", "", "name to check the brokers' certificates against (default: the host dialled)")
	fs.BoolVar(&k.files.InsecureSkipVerify, "kafka-tls-insecure-skip-verify", false, "accept any broker certificate: for trials only, it allows interception")
	fs.StringVar(&k.mechanism, "kafka-sasl-mechanism", "", "SASL mechanism to the brokers: plain, scram-sha-256 or scram-sha-512 (empty: no SASL)")
	fs.StringVar(&k.user, "kafka-sasl-user", "", "SASL user name")
	fs.StringVar(&k.passwordFile, "kafka-sasl-password-file", "", "file holding the SASL password (a trailing newline is dropped); or set "+kafkaPasswordEnv)
}

// on says whether any of the flags was set.
func (k *kafkaSecurity) on(lookupEnv func(string) (string, bool)) bool {
	_, env := lookupEnv(kafkaPasswordEnv)
	return k.tlsOn() || k.mechanism != "" || k.user != "" || k.passwordFile != "" || env
}

func (k *kafkaSecurity) tlsOn() bool {
	f := k.files
	return k.tls || f.CAFile != "" || f.CertFile != "" || f.KeyFile != "" || f.ServerName != "" || f.InsecureSkipVerify
}

// apply checks the flags and sets cfg's TLS and SASL. Its messages name
// flags and files, never the password.
func (k *kafkaSecurity) apply(src sources, lookupEnv func(string) (string, bool), cfg *kafka.Config) error {
	if k.tlsOn() {
		t, err := k.files.Load()
		if err != nil {
			return k.tlsError(src, err)
		}
		cfg.TLS = t
	}
	if k.mechanism == "" && k.user == "" && k.passwordFile == "" {
		if _, ok := lookupEnv(kafkaPasswordEnv); ok {
			return fmt.Errorf("%s is set but %s is not", kafkaPasswordEnv, src.describe("kafka-sasl-mechanism"))
		}
		return nil
	}
	switch strings.ToUpper(k.mechanism) {
	case kafka.SASLPlain, kafka.SASLScramSHA256, kafka.SASLScramSHA512:
	case "":
		return fmt.Errorf("%s: required with a SASL user or password", src.describe("kafka-sasl-mechanism"))
	default:
		return fmt.Errorf("%s %q: want plain, scram-sha-256 or scram-sha-512", src.describe("kafka-sasl-mechanism"), k.mechanism)
	}
	if k.user == "" {
		return fmt.Errorf("%s: required with %s", src.describe("kafka-sasl-user"), src.describe("kafka-sasl-mechanism"))
	}
	password, err := k.password(src, lookupEnv)
	if err != nil {
		return err
	}
	cfg.SASL = kafka.SASL{Mechanism: strings.ToUpper(k.mechanism), User: k.user, Password: password}
	return nil
}

// password reads the file or the environment; exactly one must be set.
func (k *kafkaSecurity) password(src sources, lookupEnv func(string) (string, bool)) (string, error) {
	env, inEnv := lookupEnv(kafkaPasswordEnv)
	switch {
	case k.passwordFile != "" && inEnv:
		return "", fmt.Errorf("%s and %s both set: give one", src.describe("kafka-sasl-password-file"), kafkaPasswordEnv)
	case inEnv:
		if env == "" {
			return "", fmt.Errorf("%s: must not be empty", kafkaPasswordEnv)
		}
		return env, nil
	case k.passwordFile == "":
		return "", fmt.Errorf("%s or %s: required with %s", src.describe("kafka-sasl-password-file"), kafkaPasswordEnv, src.describe("kafka-sasl-mechanism"))
	}
	b, err := os.ReadFile(k.passwordFile)
	if err != nil {
		return "", fmt.Errorf("%s: %w", src.describe("kafka-sasl-password-file"), err)
	}
	p := strings.TrimRight(string(b), "\r\n")
	if p == "" {
		return "", fmt.Errorf("%s %s: the file is empty", src.describe("kafka-sasl-password-file"), k.passwordFile)
	}
	return p, nil
}

// tlsError names the flags behind a TLSFiles error.
func (k *kafkaSecurity) tlsError(src sources, err error) error {
	return namedByFlags(err, "kafka", map[string]string{
		"CAFile": "kafka-tls-ca", "CertFile": "kafka-tls-cert", "KeyFile": "kafka-tls-key",
	}, src)
}

// args are the flags again, for a gateway started as a child process
// (bench); the password travels in its file or the inherited environment.
func (k *kafkaSecurity) args() []string {
	var a []string
	for _, f := range []struct{ name, v string }{
		{"kafka-tls-ca", k.files.CAFile}, {"kafka-tls-cert", k.files.CertFile}, {"kafka-tls-key", k.files.KeyFile},
		{"kafka-tls-server-name", k.files.ServerName}, {"kafka-sasl-mechanism", k.mechanism},
		{"kafka-sasl-user", k.user}, {"kafka-sasl-password-file", k.passwordFile},
	} {
		if f.v != "" {
			a = append(a, "--"+f.name, f.v)
		}
	}
	if k.tls {
		a = append(a, "--kafka-tls")
	}
	if k.files.InsecureSkipVerify {
		a = append(a, "--kafka-tls-insecure-skip-verify")
	}
	return a
}
