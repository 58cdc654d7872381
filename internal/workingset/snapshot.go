package workingset

import (
	"context"
	"errors"
	"io/fs"
	"os"
	"path/filepath"
	"sort"
	"time"
	"unsafe"

	"golang.org/x/sys/unix"
)

// maxWalkFiles bounds a snapshot's walk: a root with more files than this
// is not a runtime's or a function's and is not worth recording whole.
const maxWalkFiles = 200_000

// fileKey names a file in a snapshot: its root's ID and its path there.
type fileKey struct {
	root string
	path string
}

// fileState is a file's identity and which of its pages were resident.
type fileState struct {
	size    int64
	mtimeNs int64
	ino     uint64
	// resident has one bit per page.
	resident []uint64
}

func (s *fileState) has(page int) bool {
	return s.resident[page/64]&(1<<(page%64)) != 0
}

// Snapshot is the page-cache residency of the files under some roots.
type Snapshot struct {
	roots []Root
	files map[fileKey]*fileState
	// Took is how long the snapshot took (it is on a recording start's
	// path).
	Took time.Duration
}

// Snap takes the page-cache residency of every regular file under roots
// with mincore(2). mincore reports the page cache of files the caller
// owns or may write (and root may do both); for other files it sees only
// the pages this process maps, so an unprivileged worker records little.
// A file that cannot be read is left out: the snapshot is a hint.
func Snap(ctx context.Context, roots []Root) (*Snapshot, error) {
	began := time.Now()
	s := &Snapshot{roots: roots, files: map[fileKey]*fileState{}}
	pageSize := os.Getpagesize()
	n := 0
	for _, r := range roots {
		err := filepath.WalkDir(r.Path, func(p string, d fs.DirEntry, err error) error {
			if err != nil {
				if p == r.Path {
					return err
				}
				return nil // unreadable below the root: skipped
			}
			if !d.Type().IsRegular() {
				return nil
			}
			if n++; n > maxWalkFiles {
				return errorf("more than %d files under %s", maxWalkFiles, r.Path)
			}
			if n%256 == 0 {
				if err := ctx.Err(); err != nil {
					return err
				}
			}
			rel, err := filepath.Rel(r.Path, p)
			if err != nil {
				return nil
			}
			if rel == "." {
				rel = ""
			}
			if st := residency(p, pageSize); st != nil {
				s.files[fileKey{r.ID, rel}] = st
			}
			return nil
		})
		if err != nil {
			return nil, errorf("snapshot of %s: %w", r.ID, err)
		}
	}
	s.Took = time.Since(began)
	return s, nil
}

// Roots are the roots the snapshot covers.
func (s *Snapshot) Roots() []Root { return s.roots }

// Merge returns a snapshot of a's roots and files and b's: the
// snapshots of roots taken at different moments of one start.
func Merge(a, b *Snapshot) *Snapshot {
	out := &Snapshot{files: make(map[fileKey]*fileState, len(a.files)+len(b.files)), Took: a.Took + b.Took}
	out.roots = append(append(out.roots, a.roots...), b.roots...)
	for k, v := range a.files {
		out.files[k] = v
	}
	for k, v := range b.files {
		out.files[k] = v
	}
	return out
}

// residency maps the file and asks mincore which of its pages are in the
// page cache; mapping does not read anything.
func residency(path string, pageSize int) *fileState {
	f, err := os.OpenFile(path, os.O_RDONLY|unix.O_NOATIME|unix.O_CLOEXEC, 0)
	if errors.Is(err, fs.ErrPermission) {
		f, err = os.Open(path) // O_NOATIME needs ownership
	}
	if err != nil {
		return nil
	}
	defer f.Close()
	return residencyOf(f, pageSize)
}

// residencyOf is residency on an open file.
func residencyOf(f *os.File, pageSize int) *fileState {
	var st unix.Stat_t
	if err := unix.Fstat(int(f.Fd()), &st); err != nil || st.Size <= 0 {
		return nil
	}
	state := &fileState{size: st.Size, mtimeNs: st.Mtim.Nano(), ino: st.Ino}
	pages := int((st.Size + PageSize - 1) / PageSize)
	state.resident = make([]uint64, (pages+63)/64)
	m, err := unix.Mmap(int(f.Fd()), 0, int(st.Size), unix.PROT_READ, unix.MAP_SHARED)
	if err != nil {
		return nil
	}
	defer unix.Munmap(m)
	hostPages := (int(st.Size) + pageSize - 1) / pageSize
	vec := make([]byte, hostPages)
	if err := mincore(m, vec); err != nil {
		return nil
	}
	// Host pages to record pages (a larger host page covers several).
	for hp, v := range vec {
		if v&1 == 0 {
			continue
		}
		first := hp * pageSize / PageSize
		last := min((hp+1)*pageSize/PageSize, pages)
		for p := first; p < last; p++ {
			state.resident[p/64] |= 1 << (p % 64)
		}
	}
	return state
}

// mincore fills vec with the residency of m's pages (x/sys/unix has no
// wrapper).
func mincore(m, vec []byte) error {
	_, _, errno := unix.Syscall(unix.SYS_MINCORE, uintptr(unsafe.Pointer(&m[0])), uintptr(len(m)), uintptr(unsafe.Pointer(&vec[0])))
	if errno != 0 {
		return errno
	}
	return nil
}

// Build makes a record of the pages resident in after that were not in
// before (the pages the start read), coalesced and bounded by l. A file
// whose identity differs between the snapshots is left out: it changed
// while the start ran.
func Build(before, after *Snapshot, l Limits) Record {
	l = l.withDefaults()
	rootIndex := map[string]int{}
	rec := Record{Format: FormatVersion, Recorded: time.Now().UTC()}
	for i, r := range after.roots {
		rootIndex[r.ID] = i
		rec.Roots = append(rec.Roots, r.ID)
	}
	type touched struct {
		key    fileKey
		st     *fileState
		ranges []Range
	}
	var files []touched
	for k, a := range after.files {
		b := before.files[k]
		if b != nil && (b.size != a.size || b.mtimeNs != a.mtimeNs || b.ino != a.ino) {
			continue
		}
		var ranges []Range
		pages := int((a.size + PageSize - 1) / PageSize)
		for p := 0; p < pages; p++ {
			if !a.has(p) || (b != nil && b.has(p)) {
				continue
			}
			if n := len(ranges); n > 0 && ranges[n-1].Start+ranges[n-1].Len == uint32(p) {
				ranges[n-1].Len++
				continue
			}
			ranges = append(ranges, Range{Start: uint32(p), Len: 1})
		}
		if len(ranges) > 0 {
			files = append(files, touched{k, a, ranges})
		}
	}
	// The largest files first: when the record must be cut, what is
	// left is the bulk of the bytes.
	sort.Slice(files, func(i, j int) bool {
		if files[i].st.size != files[j].st.size {
			return files[i].st.size > files[j].st.size
		}
		if files[i].key.root != files[j].key.root {
			return files[i].key.root < files[j].key.root
		}
		return files[i].key.path < files[j].key.path
	})
	if len(files) > l.MaxFiles {
		files = files[:l.MaxFiles]
	}
	// Coalesce across gaps, widening them until the record fits.
	for gap := l.GapPages; ; gap = max(gap*2, 1) {
		total := 0
		for i := range files {
			files[i].ranges = coalesce(files[i].ranges, gap)
			total += len(files[i].ranges)
		}
		if total <= l.MaxRanges || gap > 1<<16 {
			break
		}
	}
	total := 0
	for _, f := range files {
		if total+len(f.ranges) > l.MaxRanges {
			break
		}
		total += len(f.ranges)
		flat := make([]uint32, 0, 2*len(f.ranges))
		for _, r := range f.ranges {
			flat = append(flat, r.Start, r.Len)
		}
		rec.Files = append(rec.Files, File{
			Root: rootIndex[f.key.root], Path: f.key.path,
			Size: f.st.size, MtimeNs: f.st.mtimeNs, Ino: f.st.ino, Ranges: flat,
		})
	}
	return rec
}

// coalesce merges ranges separated by at most gap pages.
func coalesce(rs []Range, gap int) []Range {
	if len(rs) < 2 {
		return rs
	}
	out := rs[:1]
	for _, r := range rs[1:] {
		last := &out[len(out)-1]
		end := last.Start + last.Len
		if int(r.Start)-int(end) <= gap {
			last.Len = r.Start + r.Len - last.Start
			continue
		}
		out = append(out, r)
	}
	return out
}
