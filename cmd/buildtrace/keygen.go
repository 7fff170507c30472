package main

import (
	"errors"
	"fmt"
	"io"

	"github.com/buildtrace/buildtrace/pkg/sign"
)

func runKeygen(args []string, stdout, stderr io.Writer) error {
	fs := newFlagSet("keygen", stderr)
	priv := fs.String("private", "", "where to write the PEM private key (mode 0600; must not exist)")
	pub := fs.String("public", "", "where to write the PEM public key (must not exist)")
	pos, err := parseInterspersed(fs, args)
	if err != nil {
		return err
	}
	if len(pos) != 0 {
		return fmt.Errorf("unexpected arguments %q", pos)
	}
	if *priv == "" || *pub == "" {
		return errors.New("both --private and --public are required")
	}
	if err := sign.GenerateKeyPair(*priv, *pub); err != nil {
		return err
	}
	fmt.Fprintf(stdout, "wrote private key %s and public key %s\n", *priv, *pub)
	return nil
}
