package cli

import (
	"archive/tar"
	"fmt"
	"io"
	"io/fs"
	"os"
	"path/filepath"
	"text/tabwriter"

	"github.com/spf13/cobra"

	"github.com/baton-faas/baton/client"
)

func newImageCmd() *cobra.Command {
	cmd := &cobra.Command{Use: "image", Short: "Manage root filesystem images (import, ls, rm)"}
	cmd.AddCommand(newImageImportCmd(), newImageListCmd(), newImageRemoveCmd())
	return cmd
}

func newImageImportCmd() *cobra.Command {
	var name string
	var connect func() (*client.Client, error)
	cmd := &cobra.Command{
		Use:   "import PATH --name NAME",
		Short: "Import an OCI image layout directory, an OCI tarball or a docker save archive",
		Args:  cobra.ExactArgs(1),
		RunE: func(cmd *cobra.Command, args []string) error {
			if name == "" {
				return fmt.Errorf("--name is required: the name functions will use in --image")
			}
			c, err := connect()
			if err != nil {
				return err
			}
			st, err := os.Stat(args[0])
			if err != nil {
				return fmt.Errorf("image: %w", err)
			}
			var body io.Reader
			if st.IsDir() {
				// An OCI layout directory travels as a tar of itself.
				pr, pw := io.Pipe()
				go func() { pw.CloseWithError(tarDir(args[0], pw)) }()
				defer pr.Close()
				body = pr
			} else {
				f, err := os.Open(args[0])
				if err != nil {
					return fmt.Errorf("image: %w", err)
				}
				defer f.Close()
				body = f
			}
			img, err := c.ImportImage(cmd.Context(), name, body)
			if err != nil {
				return err
			}
			fmt.Fprintf(cmd.OutOrStdout(), "imported image %s (%d layers, %d bytes)\n", img.Name, len(img.Layers), img.Size)
			return nil
		},
	}
	connect = serverFlag(cmd)
	cmd.Flags().StringVar(&name, "name", "", "name of the image in Baton")
	return cmd
}

// tarDir writes dir as a tar stream with paths relative to dir.
func tarDir(dir string, w io.Writer) error {
	tw := tar.NewWriter(w)
	err := filepath.WalkDir(dir, func(path string, d fs.DirEntry, err error) error {
		if err != nil {
			return err
		}
		rel, err := filepath.Rel(dir, path)
		if err != nil || rel == "." {
			return err
		}
		info, err := d.Info()
		if err != nil {
			return err
		}
		if !info.Mode().IsRegular() && !info.IsDir() {
			return fmt.Errorf("%s: only files and directories belong in an OCI layout", path)
		}
		hdr, err := tar.FileInfoHeader(info, "")
		if err != nil {
			return err
		}
		hdr.Name = filepath.ToSlash(rel)
		if err := tw.WriteHeader(hdr); err != nil {
			return err
		}
		if info.IsDir() {
			return nil
		}
		f, err := os.Open(path)
		if err != nil {
			return err
		}
		defer f.Close()
		_, err = io.Copy(tw, f)
		return err
	})
	if err != nil {
		return err
	}
	return tw.Close()
}

func newImageListCmd() *cobra.Command {
	var connect func() (*client.Client, error)
	cmd := &cobra.Command{
		Use:   "ls",
		Short: "List images (the runtime base images are built from the host on first use)",
		Args:  cobra.NoArgs,
		RunE: func(cmd *cobra.Command, _ []string) error {
			c, err := connect()
			if err != nil {
				return err
			}
			imgs, err := c.Images(cmd.Context())
			if err != nil {
				return err
			}
			tw := tabwriter.NewWriter(cmd.OutOrStdout(), 0, 4, 2, ' ', 0)
			fmt.Fprintln(tw, "NAME\tLAYERS\tSIZE\tCREATED\tSOURCE")
			for _, i := range imgs {
				fmt.Fprintf(tw, "%s\t%d\t%.1f MB\t%s\t%s\n", i.Name, len(i.Layers), float64(i.Size)/1e6, i.Created.Local().Format("2006-01-02 15:04"), i.Source)
			}
			return tw.Flush()
		},
	}
	connect = serverFlag(cmd)
	return cmd
}

func newImageRemoveCmd() *cobra.Command {
	var connect func() (*client.Client, error)
	cmd := &cobra.Command{
		Use:   "rm NAME",
		Short: "Delete an image no function uses",
		Args:  cobra.ExactArgs(1),
		RunE: func(cmd *cobra.Command, args []string) error {
			c, err := connect()
			if err != nil {
				return err
			}
			if err := c.RemoveImage(cmd.Context(), args[0]); err != nil {
				return err
			}
			fmt.Fprintf(cmd.OutOrStdout(), "deleted image %s\n", args[0])
			return nil
		},
	}
	connect = serverFlag(cmd)
	return cmd
}
