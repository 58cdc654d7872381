package httpapi

import (
	"errors"
	"fmt"
	"net/http"

	"github.com/baton-faas/baton/internal/image"
	"github.com/baton-faas/baton/internal/workerapi"
)

// maxImageBytes caps an uploaded image archive.
const maxImageBytes = 4 << 30

func (s *Server) registerImageRoutes() {
	s.mux.HandleFunc("GET /v1/images", s.listImages)
	s.mux.HandleFunc("PUT /v1/images/{name...}", s.importImage)
	s.mux.HandleFunc("DELETE /v1/images/{name...}", s.removeImage)
}

func (s *Server) writeImageError(w http.ResponseWriter, err error) {
	switch {
	case errors.Is(err, workerapi.ErrNoImageStore):
		writeError(w, http.StatusNotImplemented, "no_image_store", err.Error())
	case errors.Is(err, image.ErrInvalidName):
		writeError(w, http.StatusBadRequest, "invalid_image_name", err.Error())
	case errors.Is(err, workerapi.ErrImageNotFound):
		writeError(w, http.StatusNotFound, "image_not_found", err.Error())
	case errors.Is(err, workerapi.ErrImageInUse):
		writeError(w, http.StatusConflict, "image_in_use", err.Error())
	default:
		s.log.Warn("image request", "err", err)
		writeError(w, http.StatusInternalServerError, "internal", err.Error())
	}
}

func (s *Server) listImages(w http.ResponseWriter, r *http.Request) {
	imgs, err := s.c.Images(r.Context())
	if err != nil {
		s.writeImageError(w, err)
		return
	}
	writeJSON(w, http.StatusOK, map[string]any{"images": imgs})
}

// importImage takes an OCI layout tarball or a docker-save archive
// (optionally gzipped) as the request body.
func (s *Server) importImage(w http.ResponseWriter, r *http.Request) {
	name := r.PathValue("name")
	if err := image.ValidateName(name); err != nil {
		s.writeImageError(w, err)
		return
	}
	// The body streams to the worker, which stores the archive.
	img, err := s.c.ImportImage(r.Context(), name, http.MaxBytesReader(w, r.Body, maxImageBytes))
	if err != nil {
		var tooBig *http.MaxBytesError
		if errors.As(err, &tooBig) {
			writeError(w, http.StatusRequestEntityTooLarge, "image_too_large", fmt.Sprintf("image archive is larger than %d bytes", int64(maxImageBytes)))
			return
		}
		if errors.Is(err, image.ErrInvalidName) || errors.Is(err, workerapi.ErrNoImageStore) {
			s.writeImageError(w, err)
			return
		}
		// What fails here is almost always the uploaded archive.
		writeError(w, http.StatusBadRequest, "bad_image", fmt.Sprintf("import of image %s failed: %v", name, err))
		return
	}
	writeJSON(w, http.StatusCreated, img)
}

func (s *Server) removeImage(w http.ResponseWriter, r *http.Request) {
	name := r.PathValue("name")
	if err := s.c.RemoveImage(r.Context(), name); err != nil {
		s.writeImageError(w, err)
		return
	}
	writeJSON(w, http.StatusOK, map[string]string{"deleted": name})
}
