package httpapi

import (
	"context"
	"fmt"
	"net/http"

	apiv1 "github.com/baton-faas/baton/api/v1"
	"github.com/baton-faas/baton/internal/cluster/membership"
	"github.com/baton-faas/baton/internal/errdefs"
)

// Nodes lists the cluster's live nodes (GET /v1/nodes). The controller
// satisfies it in cluster mode, and so does *membership.Members itself.
type Nodes interface {
	Nodes(ctx context.Context) ([]membership.Node, error)
}

func (s *Server) listNodes(w http.ResponseWriter, r *http.Request) {
	if s.opts.Nodes == nil {
		s.writeErr(w, apiError(errdefs.NotImplemented, apiv1.CodeNoMembership, "this server does not track cluster nodes"))
		return
	}
	nodes, err := s.opts.Nodes.Nodes(r.Context())
	if err != nil {
		if c, _ := errdefs.Classify(err); c == errdefs.Internal {
			err = apiError(errdefs.Unavailable, apiv1.CodeMembershipUnavailable, fmt.Sprintf("cannot read the cluster's membership: %v", err))
		}
		s.writeErr(w, err)
		return
	}
	out := apiv1.NodeList{Nodes: make([]apiv1.Node, 0, len(nodes))}
	for _, n := range nodes {
		out.Nodes = append(out.Nodes, nodeToWire(n))
	}
	writeJSON(w, http.StatusOK, out)
}

func nodeToWire(n membership.Node) apiv1.Node {
	roles := make([]string, 0, len(n.Roles))
	for _, r := range n.Roles {
		roles = append(roles, string(r))
	}
	return apiv1.Node{
		ID: n.ID, Roles: roles, Address: n.Address, State: string(n.State),
		Capacity:  apiv1.Resources{MemoryMB: n.Load.Capacity.MemoryMB, MilliCPUs: n.Load.Capacity.MilliCPUs},
		Reserved:  apiv1.Resources{MemoryMB: n.Load.Reserved.MemoryMB, MilliCPUs: n.Load.Reserved.MilliCPUs},
		Instances: n.Load.Instances, Sandboxes: n.Load.Sandboxes, Started: n.Started, LastHeartbeat: n.Heartbeat,
	}
}
