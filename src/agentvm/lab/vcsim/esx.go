package main

import (
	"strings"

	"github.com/vmware/govmomi/simulator"
	"github.com/vmware/govmomi/vim25/mo"
	"github.com/vmware/govmomi/vim25/types"
)

// ESX mode (--esx): one standalone ESXi host agent, as a real ESXi answers a client that connects to the
// host itself. 0.24.2's simulator.ESX() model is the base (about.apiType HostAgent, ha-datacenter, ha-host,
// the host's own ComputeResource, resource pool and datastore; no ExtensionManager, no
// CustomFieldsManager, no EAM); main gives it none of the lab's vCenter additions (ExtensionManager,
// EsxAgentHostManager, certificate login, /eam/sdk: the front answers 404 there and refuses
// LoginExtensionByCertificate). What a host agent has and 0.24.2 lacks is added here: the host's own
// name and hardware UUID (every simulator is a host of its own), physical NICs and the HostNetworkSystem
// of host_network.go (standard vSwitches only), a HostAutoStartManager (autostart.go), and PowerOn
// refused while the host is in (or entering) maintenance mode, and EnterMaintenanceMode_Task waiting for
// the host's powered-on VMs as ESXi's does, with the task in the host's recentTask (maintenance.go).

// esxHost is the one host of an ESX model.
func esxHost() *simulator.HostSystem {
	for _, e := range simulator.Map.All("HostSystem") {
		if host, ok := e.(*simulator.HostSystem); ok {
			return host
		}
	}
	return nil
}

// extendESX gives an ESX model built by m.Create() the host name (inventory name, summary.config.name,
// its ComputeResource's name, the DNS host and domain name), a hardware UUID (when not ""), the paging
// root collector, physical NICs and our network system, and a HostAutoStartManager. main calls it once,
// before anything connects; the Go tests on their own models.
func extendESX(m *simulator.Model, name, hostUUID string) *simulator.HostSystem {
	if pc, ok := simulator.Map.Get(m.ServiceContent.PropertyCollector).(*simulator.PropertyCollector); ok {
		paging := &pagingCollector{}
		paging.PropertyCollector.PropertyCollector = pc.PropertyCollector
		simulator.Map.Put(paging)
	}
	host := esxHost()
	if host == nil {
		return nil
	}
	simulator.Map.WithLock(host, func() {
		if name != "" {
			host.Name = name
			host.Summary.Config.Name = name
			if host.Config != nil && host.Config.Network != nil {
				if dns, ok := host.Config.Network.DnsConfig.(*types.HostDnsConfig); ok {
					copied := *dns
					copied.HostName, copied.DomainName = name, ""
					if i := strings.Index(name, "."); i > 0 {
						copied.HostName, copied.DomainName = name[:i], name[i+1:]
					}
					host.Config.Network.DnsConfig = &copied
				}
			}
		}
		if hostUUID != "" {
			hardware := *host.Summary.Hardware
			hardware.Uuid = strings.ToLower(hostUUID)
			host.Summary.Hardware = &hardware
			info := *host.Hardware
			info.SystemInfo.Uuid = strings.ToLower(hostUUID)
			host.Hardware = &info
		}
	})
	if name != "" && host.Parent != nil {
		if cr, ok := simulator.Map.Get(*host.Parent).(*mo.ComputeResource); ok {
			simulator.Map.WithLock(cr, func() { cr.Name = name })
		}
	}
	setupHostNetwork(host)
	setupAutoStart(host)
	return host
}
