package httpapi

import (
	"errors"
	"fmt"
	"net/http"

	apiv1 "github.com/baton-faas/baton/api/v1"
	"github.com/baton-faas/baton/internal/errdefs"
	"github.com/baton-faas/baton/internal/image"
)

// maxImageBytes caps an uploaded image archive.
const maxImageBytes = 4 << 30

func (s *Server) registerImageRoutes() {
	s.mux.HandleFunc("GET /v1/images", s.listImages)
	s.mux.HandleFunc("PUT /v1/images/{name...}", s.importImage)
	s.mux.HandleFunc("DELETE /v1/images/{name...}", s.removeImage)
}

func (s *Server) listImages(w http.ResponseWriter, r *http.Request) {
	imgs, err := s.c.Images(r.Context())
	if err != nil {
		s.writeErr(w, err)
		return
	}
	out := apiv1.ImageList{Images: make([]apiv1.Image, 0, len(imgs))}
	for _, img := range imgs {
		out.Images = append(out.Images, imageToWire(img))
	}
	writeJSON(w, http.StatusOK, out)
}

// importImage takes an OCI layout tarball or a docker-save archive
// (optionally gzipped) as the request body.
func (s *Server) importImage(w http.ResponseWriter, r *http.Request) {
	name := r.PathValue("name")
	if err := image.ValidateName(name); err != nil {
		s.writeErr(w, err)
		return
	}
	// The body streams to the worker, which stores the archive.
	img, err := s.c.ImportImage(r.Context(), name, http.MaxBytesReader(w, r.Body, maxImageBytes))
	if err != nil {
		var tooBig *http.MaxBytesError
		if errors.As(err, &tooBig) {
			s.writeErr(w, apiError(errdefs.TooLarge, apiv1.CodeImageTooLarge, fmt.Sprintf("image archive is larger than %d bytes", int64(maxImageBytes))))
			return
		}
		if c, _ := errdefs.Classify(err); c == errdefs.Internal {
			// What fails here is almost always the uploaded archive.
			err = apiError(errdefs.Invalid, apiv1.CodeBadImage, fmt.Sprintf("import of image %s failed: %v", name, err))
		}
		s.writeErr(w, err)
		return
	}
	writeJSON(w, http.StatusCreated, imageToWire(img))
}

func (s *Server) removeImage(w http.ResponseWriter, r *http.Request) {
	name := r.PathValue("name")
	if err := s.c.RemoveImage(r.Context(), name); err != nil {
		s.writeErr(w, err)
		return
	}
	writeJSON(w, http.StatusOK, apiv1.Deleted{Deleted: name})
}
