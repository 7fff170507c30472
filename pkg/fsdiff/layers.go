package fsdiff

import (
	"context"
	"fmt"
	"io"
	"strings"
)

// FromLayers computes the normalised diff of several uncompressed layer
// tars applied in order over lower, taken together: the net change one
// overlay snapshot holding all of them shows. BuildKit makes such a
// snapshot for the inputs of a merge (consecutive COPY --link) above their
// common parent, while the image keeps one layer per input, so a step run
// on top sees one lower where the image has several layers. Each layer is
// read as FromLayer reads it; then a later layer's entry replaces an
// earlier one's at its path, a deletion of what an earlier layer of the
// group made leaves nothing, and a directory back at its lower mode and
// owner is no change. Opaque markers are refused (the layers it is for are
// made on scratch: they have none). It adds the layers to lower.
// open returns layer i of n (0 first); its Close must fail when what was
// read is not the layer (a digest check).
func FromLayers(ctx context.Context, n int, open func(i int) (io.ReadCloser, error), lower *Stack) (string, error) {
	if lower == nil {
		lower = NewStack()
	}
	// What was there before the group decides what the net change is.
	b, err := lower.MarshalBinary()
	if err != nil {
		return "", err
	}
	orig := NewStack()
	if err := orig.UnmarshalBinary(b); err != nil {
		return "", err
	}
	net := map[string]*entry{}  // path → the entry of a present path
	gone := map[string]*entry{} // path → a deletion of what orig had
	for i := range n {
		r, err := open(i)
		if err != nil {
			return "", err
		}
		es, err := layerEntries(ctx, r, lower, false)
		if cerr := r.Close(); err == nil {
			err = cerr
		}
		if err != nil {
			return "", fmt.Errorf("layer %d of %d: %w", i+1, n, err)
		}
		for _, e := range es { // sorted: a deletion before a directory at its path
			switch e.kind {
			case kindOpaque:
				return "", fmt.Errorf("layer %d of %d: an opaque directory %s in a group of layers read as one", i+1, n, e.path)
			case kindDeleted:
				// What earlier layers of the group put at or below the
				// path is gone with it.
				for p := range net {
					if p == e.path || strings.HasPrefix(p, e.path+"/") {
						delete(net, p)
					}
				}
				if orig.lookup(e.path) != nil {
					gone[e.path] = e
				}
			default:
				net[e.path] = e
			}
		}
	}
	es := make([]*entry, 0, len(net)+len(gone))
	for _, e := range gone {
		es = append(es, e)
	}
	for p, e := range net {
		if n := orig.lookup(p); e.kind == kindDir && n != nil && n.dir && n.meta == e.dirMeta() {
			if _, deleted := gone[p]; !deleted {
				continue // a directory as it was below the group
			}
		}
		es = append(es, e)
	}
	sortEntries(es)
	return digest(es), nil
}
