package attest

import (
	"bytes"
	"encoding/json"
	"fmt"
	"io"
	"strings"
)

// noDuplicateKeys fails on a JSON object that names one key twice, also
// under case folding. JSON parsers disagree on which value wins, and Go's
// matches keys case-insensitively, so a document with such keys can show
// one reader something else than what was verified.
func noDuplicateKeys(data []byte) error {
	dec := json.NewDecoder(bytes.NewReader(data))
	dec.UseNumber()
	var walk func(path string) error
	walk = func(path string) error {
		tok, err := dec.Token()
		if err != nil {
			return err
		}
		switch tok {
		case json.Delim('{'):
			var keys []string
			for dec.More() {
				kt, err := dec.Token()
				if err != nil {
					return err
				}
				k, _ := kt.(string)
				for _, o := range keys {
					if o == k {
						return fmt.Errorf("%s has the key %q twice", path, k)
					}
					if strings.EqualFold(o, k) {
						return fmt.Errorf("%s has the keys %q and %q, which differ only in case", path, o, k)
					}
				}
				keys = append(keys, k)
				if err := walk(path + "." + k); err != nil {
					return err
				}
			}
			_, err = dec.Token() // }
			return err
		case json.Delim('['):
			for i := 0; dec.More(); i++ {
				if err := walk(fmt.Sprintf("%s[%d]", path, i)); err != nil {
					return err
				}
			}
			_, err = dec.Token() // ]
			return err
		}
		return nil
	}
	if err := walk("$"); err != nil && err != io.EOF {
		return err
	}
	return nil
}
