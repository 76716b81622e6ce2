package main

import (
	"bytes"
	"fmt"
	"net/http"
	"regexp"
	"strings"
	"sync"

	"github.com/vmware/govmomi/simulator"
	"github.com/vmware/govmomi/vim25/methods"
	"github.com/vmware/govmomi/vim25/soap"
	"github.com/vmware/govmomi/vim25/types"
)

// DV ports (netsync): ReconfigureDVPort_Task, and a FetchDVPorts that honours criteria.portKey and returns
// each port's own settings and connectee. 0.24.2 has no ReconfigureDVPort_Task, and its FetchDVPorts
// returns every port group's default setting under per-port-group keys. The simulator's switch type can
// neither get new methods from here nor be replaced (other simulator code type-asserts it), so the front
// routes these two calls (and the switch calls of dvs_members.go) to a dvPorts object per switch,
// registered under the moref type "AgentvmDVPorts"; routeDVPortCalls also routes a few DV port group and
// CustomFieldsManager calls the same way.

const dvPortsType = "AgentvmDVPorts"

var reDVPortCall = regexp.MustCompile(
	`(?s)(<(ReconfigureDVPort_Task|FetchDVPorts|ReconfigureDvs_Task|CreateDVPortgroup_Task|ReconfigureDVPortgroup_Task|Destroy_Task|SetField)\b[^>]*>\s*<_this\b[^>]*?type=")([^"]*)("[^>]*>)([^<]*)(</_this>)`)

type dvPorts struct {
	self     types.ManagedObjectReference
	dvs      types.ManagedObjectReference
	vlans    map[string]types.BaseVmwareDistributedVirtualSwitchVlanSpec // port key -> its own VLAN
	versions map[string]int
}

func (p *dvPorts) Reference() types.ManagedObjectReference { return p.self }

var dvPortsMu sync.Mutex

// routeDVPortCalls rewrites the _this of the calls 0.24.2 answers differently from vCenter to the object
// that answers them here: a switch's ReconfigureDVPort_Task, FetchDVPorts, ReconfigureDvs_Task and
// CreateDVPortgroup_Task to its dvPorts (dvs_members.go has the last two), a DV port group's
// ReconfigureDVPortgroup_Task and Destroy_Task to its dvPortgroup, the CustomFieldsManager's SetField to
// customFields (custom_fields.go). It returns the body, the routed type and the object's own type (""
// when nothing was routed).
func routeDVPortCalls(body []byte) ([]byte, string, string) {
	m := reDVPortCall.FindSubmatchIndex(body)
	if m == nil {
		return body, "", ""
	}
	method, kind, moid := string(body[m[4]:m[5]]), string(body[m[6]:m[7]]), string(body[m[10]:m[11]])
	ref := types.ManagedObjectReference{Type: kind, Value: moid}
	var routed string
	switch obj := simulator.Map.Get(ref).(type) {
	case *simulator.DistributedVirtualSwitch:
		switch method {
		case "ReconfigureDVPort_Task", "FetchDVPorts", "ReconfigureDvs_Task", "CreateDVPortgroup_Task":
			routed = dvPortsType
			self := types.ManagedObjectReference{Type: dvPortsType, Value: moid}
			dvPortsMu.Lock()
			if simulator.Map.Get(self) == nil {
				simulator.Map.Put(&dvPorts{self: self, dvs: ref,
					vlans: map[string]types.BaseVmwareDistributedVirtualSwitchVlanSpec{}, versions: map[string]int{}})
			}
			dvPortsMu.Unlock()
		}
	case *simulator.DistributedVirtualPortgroup:
		if method == "ReconfigureDVPortgroup_Task" || method == "Destroy_Task" {
			routed = ensureDVPortgroup(obj.Self).Type
		}
	case *simulator.CustomFieldsManager:
		if method == "SetField" {
			routed = ensureCustomFields(obj.Self).Type
		}
	}
	if routed == "" {
		return body, "", "" // not ours: let the simulator answer (ManagedObjectNotFound for a missing object)
	}
	var b bytes.Buffer
	b.Write(body[:m[6]])
	b.WriteString(routed)
	b.Write(body[m[7]:])
	return b.Bytes(), routed, kind
}

type dvPortInfo struct {
	portgroup types.ManagedObjectReference
	connectee *types.DistributedVirtualSwitchPortConnectee
}

// connected finds the ports of this switch that VM NICs are connected to (the simulator keeps no ports).
func (p *dvPorts) connected(uuid string) map[string]dvPortInfo {
	ports := map[string]dvPortInfo{}
	for _, e := range simulator.Map.All("VirtualMachine") {
		vm, ok := e.(*simulator.VirtualMachine)
		if !ok {
			continue
		}
		simulator.Map.WithLock(vm, func() {
			if vm.Config == nil {
				return
			}
			for _, d := range vm.Config.Hardware.Device {
				nic, ok := d.(types.BaseVirtualEthernetCard)
				if !ok {
					continue
				}
				card := nic.GetVirtualEthernetCard()
				b, ok := card.Backing.(*types.VirtualEthernetCardDistributedVirtualPortBackingInfo)
				if !ok || b.Port.SwitchUuid != uuid || b.Port.PortKey == "" {
					continue
				}
				ref := vm.Self
				ports[b.Port.PortKey] = dvPortInfo{
					portgroup: types.ManagedObjectReference{Type: "DistributedVirtualPortgroup", Value: b.Port.PortgroupKey},
					connectee: &types.DistributedVirtualSwitchPortConnectee{ConnectedEntity: &ref, NicKey: fmt.Sprint(card.Key), Type: "vmVnic"},
				}
			}
		})
	}
	return ports
}

func (p *dvPorts) ReconfigureDVPortTask(req *types.ReconfigureDVPort_Task) soap.HasFault {
	sw := simulator.Map.Get(p.dvs).(*simulator.DistributedVirtualSwitch)
	task := simulator.CreateTask(sw, "reconfigureDVPort", func(*simulator.Task) (types.AnyType, types.BaseMethodFault) {
		ports := p.connected(sw.Uuid)
		for _, spec := range req.Port {
			if spec.Operation != string(types.ConfigSpecOperationEdit) {
				return nil, &types.NotSupported{}
			}
			info, ok := ports[spec.Key]
			if !ok {
				return nil, &types.NotFound{}
			}
			setting, ok := spec.Setting.(*types.VMwareDVSPortSetting)
			if !ok || setting.Vlan == nil {
				continue
			}
			if pg, ok := simulator.Map.Get(info.portgroup).(*simulator.DistributedVirtualPortgroup); ok {
				policy, _ := pg.Config.Policy.(*types.VMwareDVSPortgroupPolicy)
				if policy == nil || !policy.VlanOverrideAllowed {
					return nil, &types.InvalidArgument{InvalidProperty: "port.setting.vlan"}
				}
			}
		}
		dvPortsMu.Lock()
		defer dvPortsMu.Unlock()
		for _, spec := range req.Port {
			if setting, ok := spec.Setting.(*types.VMwareDVSPortSetting); ok && setting.Vlan != nil {
				p.vlans[spec.Key] = setting.Vlan
				p.versions[spec.Key]++
			}
		}
		return nil, nil
	})
	return &methods.ReconfigureDVPort_TaskBody{Res: &types.ReconfigureDVPort_TaskResponse{Returnval: task.Run()}}
}

func (p *dvPorts) FetchDVPorts(req *types.FetchDVPorts) soap.HasFault {
	sw := simulator.Map.Get(p.dvs).(*simulator.DistributedVirtualSwitch)
	ports := p.connected(sw.Uuid)
	keys := []string{}
	if req.Criteria != nil && len(req.Criteria.PortKey) > 0 {
		keys = req.Criteria.PortKey
	} else {
		for k := range ports {
			keys = append(keys, k)
		}
	}
	dvPortsMu.Lock()
	defer dvPortsMu.Unlock()
	res := []types.DistributedVirtualPort{}
	for _, key := range keys {
		info, ok := ports[key]
		if !ok {
			continue // a port no NIC is connected to: the simulator keeps no others
		}
		var setting types.BaseDVPortSetting
		if pg, ok := simulator.Map.Get(info.portgroup).(*simulator.DistributedVirtualPortgroup); ok {
			setting = pg.Config.DefaultPortConfig
		}
		if vlan, ok := p.vlans[key]; ok {
			own := types.VMwareDVSPortSetting{}
			if d, ok := setting.(*types.VMwareDVSPortSetting); ok && d != nil {
				own = *d
			}
			own.Vlan = vlan
			setting = &own
		}
		res = append(res, types.DistributedVirtualPort{
			Key: key, DvsUuid: sw.Uuid, PortgroupKey: info.portgroup.Value, Connectee: info.connectee,
			Config: types.DVPortConfigInfo{Setting: setting, ConfigVersion: fmt.Sprint(p.versions[key])},
		})
	}
	return &methods.FetchDVPortsBody{Res: &types.FetchDVPortsResponse{Returnval: res}}
}

// markUplinks says which port group of each switch is its uplink port group, as vCenter does
// (DVPortgroupConfigInfo.uplink, VMwareDVSConfigInfo.uplinkPortgroup): 0.24.2 creates "<dvs>-DVUplinks<n>"
// with neither set, so a client cannot tell it from a trunk port group of the user's.
func markUplinks() {
	for _, e := range simulator.Map.All("DistributedVirtualSwitch") {
		sw, ok := e.(*simulator.DistributedVirtualSwitch)
		if !ok {
			continue
		}
		suffix := "-DVUplinks" + strings.TrimPrefix(sw.Self.Value, "dvs")
		for _, ref := range sw.Portgroup {
			pg, ok := simulator.Map.Get(ref).(*simulator.DistributedVirtualPortgroup)
			if !ok || pg.Name != sw.Name+suffix {
				continue
			}
			pg.Config.Uplink = types.NewBool(true)
			if sw.Config != nil {
				config := sw.Config.GetDVSConfigInfo()
				config.UplinkPortgroup = append(config.UplinkPortgroup, ref)
			}
		}
	}
}

// routedWriter gives the switch its own type back in answers to routed DV port calls: a fault (e.g.
// NotAuthenticated after a session expired) names the object called, which the client must be able to
// parse — pyVmomi knows no "AgentvmDVPorts".
type routedWriter struct {
	http.ResponseWriter
	routed string // the type the call was routed to
	kind   string // the object's own type
	buf    bytes.Buffer
}

func (w *routedWriter) Write(b []byte) (int, error) { return w.buf.Write(b) }

func (w *routedWriter) flush() {
	body := bytes.ReplaceAll(w.buf.Bytes(), []byte(`type="`+w.routed+`"`), []byte(`type="`+w.kind+`"`))
	body = bytes.ReplaceAll(body, []byte(w.routed+":"), []byte(w.kind+":"))
	w.Header().Set("Content-Length", fmt.Sprint(len(body)))
	_, _ = w.ResponseWriter.Write(body)
}
