package main

import (
	"fmt"
	"sync"

	"github.com/vmware/govmomi/simulator"
	"github.com/vmware/govmomi/vim25/methods"
	"github.com/vmware/govmomi/vim25/mo"
	"github.com/vmware/govmomi/vim25/soap"
	"github.com/vmware/govmomi/vim25/types"
)

// HostEsxAgentHostManager, one per host

type EsxAgentHostManager struct {
	mo.HostEsxAgentHostManager
	host types.ManagedObjectReference
}

// refOrNil turns an optional reference into a property-change value (an untyped nil unsets the field).
func refOrNil(ref *types.ManagedObjectReference) interface{} {
	if ref == nil {
		return nil
	}
	return *ref
}

func contains(refs []types.ManagedObjectReference, ref *types.ManagedObjectReference) bool {
	for _, r := range refs {
		if r == *ref {
			return true
		}
	}
	return false
}

func (m *EsxAgentHostManager) EsxAgentHostManagerUpdateConfig(ctx *simulator.Context,
	req *types.EsxAgentHostManagerUpdateConfig) soap.HasFault {
	body := new(methods.EsxAgentHostManagerUpdateConfigBody)
	host, ok := simulator.Map.Get(m.host).(*simulator.HostSystem)
	if !ok {
		body.Fault_ = notFound("host " + m.host.Value)
		return body
	}
	info := req.ConfigInfo
	var fault *soap.Fault
	ctx.WithLock(host, func() {
		if ds := info.AgentVmDatastore; ds != nil && !contains(host.Datastore, ds) {
			fault = simulator.Fault(fmt.Sprintf("datastore %s is not mounted on host %s", ds.Value, host.Name),
				&types.InvalidArgument{InvalidProperty: "configInfo.agentVmDatastore"})
			return
		}
		if nw := info.AgentVmNetwork; nw != nil && !contains(host.Network, nw) {
			fault = simulator.Fault(fmt.Sprintf("network %s is not available on host %s", nw.Value, host.Name),
				&types.InvalidArgument{InvalidProperty: "configInfo.agentVmNetwork"})
			return
		}
		host.Summary.Config.AgentVmDatastore = info.AgentVmDatastore
		host.Summary.Config.AgentVmNetwork = info.AgentVmNetwork
		// published under the exact paths, which is what a filter on them is told about
		simulator.Map.Update(host, []types.PropertyChange{
			{Name: "summary.config.agentVmDatastore", Val: refOrNil(info.AgentVmDatastore)},
			{Name: "summary.config.agentVmNetwork", Val: refOrNil(info.AgentVmNetwork)},
		})
	})
	if fault != nil {
		body.Fault_ = fault
		return body
	}
	simulator.Map.Update(m, []types.PropertyChange{{Name: "configInfo", Val: info}})
	body.Res = new(types.EsxAgentHostManagerUpdateConfigResponse)
	return body
}

// agentManagers gives every host that lacks one its EsxAgentHostManager (and its physical NICs and network
// system, host_network.go). It runs after the model is
// built and again whenever hosts may have been added (AddHost_Task, AddStandaloneHost_Task).
type agentManagers struct {
	mu   sync.Mutex
	done map[types.ManagedObjectReference]bool
}

func (a *agentManagers) ensure() {
	a.mu.Lock()
	defer a.mu.Unlock()
	for _, e := range simulator.Map.All("HostSystem") {
		host, ok := e.(*simulator.HostSystem)
		if !ok || a.done[host.Self] {
			continue
		}
		mgr := &EsxAgentHostManager{host: host.Self}
		mgr.Self = types.ManagedObjectReference{Type: "HostEsxAgentHostManager", Value: "esxAgentHostManager-" + host.Self.Value}
		simulator.Map.Put(mgr)
		simulator.Map.WithLock(host, func() {
			cm := host.ConfigManager
			ref := mgr.Self
			cm.EsxAgentHostManager = &ref
			simulator.Map.Update(host, []types.PropertyChange{{Name: "configManager", Val: cm}})
		})
		a.done[host.Self] = true
		shareClusterStorage(host)
		setupHostNetwork(host)
	}
}

// shareClusterStorage mounts the datastores of a cluster's other hosts on a host that joined it with none,
// as shared storage would be on a real cluster (0.24.2 gives an added host no datastore at all).
func shareClusterStorage(host *simulator.HostSystem) {
	if host.Parent == nil || host.Parent.Type != "ClusterComputeResource" || len(host.Datastore) > 0 {
		return
	}
	cluster, ok := simulator.Map.Get(*host.Parent).(*simulator.ClusterComputeResource)
	if !ok {
		return
	}
	var shared []types.ManagedObjectReference
	for _, ref := range cluster.Host {
		if sibling, ok := simulator.Map.Get(ref).(*simulator.HostSystem); ok && ref != host.Self && len(sibling.Datastore) > 0 {
			shared = append(shared, sibling.Datastore...)
			break
		}
	}
	if len(shared) == 0 {
		return
	}
	for _, ref := range shared {
		ds, ok := simulator.Map.Get(ref).(*simulator.Datastore)
		if !ok {
			continue
		}
		simulator.Map.WithLock(ds, func() {
			mounts := append(append([]types.DatastoreHostMount(nil), ds.Host...), types.DatastoreHostMount{
				Key: host.Self,
				MountInfo: types.HostMountInfo{AccessMode: string(types.HostMountModeReadWrite),
					Mounted: types.NewBool(true), Accessible: types.NewBool(true)},
			})
			simulator.Map.Update(ds, []types.PropertyChange{{Name: "host", Val: mounts}})
		})
	}
	simulator.Map.WithLock(host, func() {
		simulator.Map.Update(host, []types.PropertyChange{{Name: "datastore", Val: shared}})
	})
}
