package main

import (
	"context"
	"strings"
	"testing"

	"github.com/vmware/govmomi/object"
	"github.com/vmware/govmomi/property"
	"github.com/vmware/govmomi/simulator"
	"github.com/vmware/govmomi/vim25"
	"github.com/vmware/govmomi/vim25/mo"
	"github.com/vmware/govmomi/vim25/types"
)

// oneSwitch is one datacenter, one host in a cluster, and a distributed switch with one port group.
func oneSwitch() *simulator.Model {
	m := simulator.VPX()
	m.Cluster, m.ClusterHost, m.Host, m.Machine, m.Portgroup = 1, 1, 0, 0, 1
	return m
}

func theSwitch(t *testing.T, c *vim25.Client) *object.DistributedVirtualSwitch {
	t.Helper()
	all := simulator.Map.All("DistributedVirtualSwitch")
	if len(all) != 1 {
		t.Fatalf("want one switch in the model, got %d", len(all))
	}
	return object.NewDistributedVirtualSwitch(c, all[0].Reference())
}

// addPortgroup adds a port group on VLAN vlan that allows or refuses a port's own VLAN, and returns it.
func addPortgroup(ctx context.Context, t *testing.T, c *vim25.Client, sw *object.DistributedVirtualSwitch,
	name string, vlan int32, override bool) types.ManagedObjectReference {
	t.Helper()
	task, err := sw.AddPortgroup(ctx, []types.DVPortgroupConfigSpec{{
		Name: name, Type: string(types.DistributedVirtualPortgroupPortgroupTypeEarlyBinding), NumPorts: 8,
		DefaultPortConfig: &types.VMwareDVSPortSetting{
			Vlan: &types.VmwareDistributedVirtualSwitchVlanIdSpec{VlanId: vlan},
		},
		Policy: &types.VMwareDVSPortgroupPolicy{VlanOverrideAllowed: override},
	}})
	if err == nil {
		err = task.Wait(ctx)
	}
	if err != nil {
		t.Fatalf("adding port group %s: %v", name, err)
	}
	ref, ok := names("DistributedVirtualPortgroup")[name]
	if !ok {
		t.Fatalf("port group %s is not in the model", name)
	}
	return ref
}

// vmOnPorts creates a VM on the model's first host with one NIC per port key, on the port groups given.
func vmOnPorts(ctx context.Context, t *testing.T, c *vim25.Client, sw *object.DistributedVirtualSwitch,
	ports map[string]types.ManagedObjectReference) types.ManagedObjectReference {
	t.Helper()
	var uuid string
	simulator.Map.WithLock(simulator.Map.Get(sw.Reference()), func() {
		uuid = simulator.Map.Get(sw.Reference()).(*simulator.DistributedVirtualSwitch).Uuid
	})
	spec := types.VirtualMachineConfigSpec{
		Name: "dvport-vm", GuestId: string(types.VirtualMachineGuestOsIdentifierOtherGuest),
		Files: &types.VirtualMachineFileInfo{VmPathName: "[LocalDS_0]"},
	}
	key := int32(-1)
	for port, pg := range ports {
		spec.DeviceChange = append(spec.DeviceChange, &types.VirtualDeviceConfigSpec{
			Operation: types.VirtualDeviceConfigSpecOperationAdd,
			Device: &types.VirtualVmxnet3{VirtualVmxnet: types.VirtualVmxnet{VirtualEthernetCard: types.VirtualEthernetCard{
				VirtualDevice: types.VirtualDevice{Key: key, Backing: &types.VirtualEthernetCardDistributedVirtualPortBackingInfo{
					Port: types.DistributedVirtualSwitchPortConnection{SwitchUuid: uuid, PortgroupKey: pg.Value, PortKey: port},
				}},
			}}},
		})
		key--
	}
	host := object.NewHostSystem(c, simulator.Map.Any("HostSystem").Reference())
	pool, err := host.ResourcePool(ctx)
	if err != nil {
		t.Fatalf("the host's pool: %v", err)
	}
	folders, err := object.NewDatacenter(c, simulator.Map.Any("Datacenter").Reference()).Folders(ctx)
	if err != nil {
		t.Fatalf("the datacenter's folders: %v", err)
	}
	task, err := folders.VmFolder.CreateVM(ctx, spec, pool, host)
	if err != nil {
		t.Fatalf("creating the VM: %v", err)
	}
	info, err := task.WaitForResult(ctx, nil)
	if err != nil {
		t.Fatalf("creating the VM: %v", err)
	}
	return info.Result.(types.ManagedObjectReference)
}

func vlanOf(t *testing.T, port types.DistributedVirtualPort) int32 {
	t.Helper()
	setting, ok := port.Config.Setting.(*types.VMwareDVSPortSetting)
	if !ok || setting.Vlan == nil {
		t.Fatalf("port %s has no VLAN setting: %+v", port.Key, port.Config.Setting)
	}
	id, ok := setting.Vlan.(*types.VmwareDistributedVirtualSwitchVlanIdSpec)
	if !ok {
		t.Fatalf("port %s: want a VLAN id, got %+v", port.Key, setting.Vlan)
	}
	return id.VlanId
}

func fetch(ctx context.Context, t *testing.T, sw *object.DistributedVirtualSwitch, keys ...string) map[string]types.DistributedVirtualPort {
	t.Helper()
	var criteria *types.DistributedVirtualSwitchPortCriteria
	if len(keys) > 0 {
		criteria = &types.DistributedVirtualSwitchPortCriteria{PortKey: keys}
	}
	ports, err := sw.FetchDVPorts(ctx, criteria)
	if err != nil {
		t.Fatalf("FetchDVPorts: %v", err)
	}
	byKey := map[string]types.DistributedVirtualPort{}
	for _, p := range ports {
		byKey[p.Key] = p
	}
	return byKey
}

func reconfigureVlan(ctx context.Context, sw *object.DistributedVirtualSwitch, key string, vlan int32) error {
	task, err := sw.ReconfigureDVPort(ctx, []types.DVPortConfigSpec{{
		Key: key, Operation: string(types.ConfigSpecOperationEdit),
		Setting: &types.VMwareDVSPortSetting{Vlan: &types.VmwareDistributedVirtualSwitchVlanIdSpec{VlanId: vlan}},
	}})
	if err != nil {
		return err
	}
	return task.Wait(ctx)
}

func TestADVPortKeepsItsOwnVlanWhereThePortGroupAllowsIt(t *testing.T) {
	ctx := context.Background()
	c := served(ctx, t, oneSwitch()).Client
	sw := theSwitch(t, c)
	open := addPortgroup(ctx, t, c, sw, "pg-open", 100, true)
	locked := addPortgroup(ctx, t, c, sw, "pg-locked", 200, false)
	vm := vmOnPorts(ctx, t, c, sw, map[string]types.ManagedObjectReference{"10": open, "11": locked})

	ports := fetch(ctx, t, sw, "10", "11", "99") // 99: no NIC is connected to it
	if len(ports) != 2 {
		t.Fatalf("want ports 10 and 11, got %v", ports)
	}
	for key, want := range map[string]struct {
		pg   types.ManagedObjectReference
		vlan int32
	}{"10": {open, 100}, "11": {locked, 200}} {
		p := ports[key]
		if p.PortgroupKey != want.pg.Value || vlanOf(t, p) != want.vlan || p.Config.ConfigVersion != "0" {
			t.Errorf("port %s: want port group %s, VLAN %d, version 0; got %s, %d, %s",
				key, want.pg.Value, want.vlan, p.PortgroupKey, vlanOf(t, p), p.Config.ConfigVersion)
		}
		if p.Connectee == nil || p.Connectee.ConnectedEntity == nil || *p.Connectee.ConnectedEntity != vm {
			t.Errorf("port %s: want the VM as connectee, got %+v", key, p.Connectee)
		}
	}

	if err := reconfigureVlan(ctx, sw, "10", 42); err != nil {
		t.Fatalf("ReconfigureDVPort on an open port group: %v", err)
	}
	if err := reconfigureVlan(ctx, sw, "11", 43); err == nil {
		t.Fatal("ReconfigureDVPort on a port group that refuses VLAN override succeeded")
	} else if f, ok := faultOf(err).(types.InvalidArgument); !ok || f.InvalidProperty != "port.setting.vlan" {
		t.Fatalf("want InvalidArgument(port.setting.vlan), got %v", err)
	}
	if err := reconfigureVlan(ctx, sw, "99", 44); err == nil {
		t.Fatal("ReconfigureDVPort on a port no NIC is connected to succeeded")
	} else if _, ok := faultOf(err).(types.NotFound); !ok {
		t.Fatalf("want NotFound, got %v", err)
	}

	ports = fetch(ctx, t, sw) // no criteria: every connected port
	if len(ports) != 2 || vlanOf(t, ports["10"]) != 42 || ports["10"].Config.ConfigVersion != "1" ||
		vlanOf(t, ports["11"]) != 200 || ports["11"].Config.ConfigVersion != "0" {
		t.Fatalf("want port 10 on VLAN 42 (version 1) and port 11 still on 200 (version 0), got %+v", ports)
	}
}

func TestARoutedDVPortCallsFaultNamesTheSwitchByItsOwnType(t *testing.T) {
	ctx := context.Background()
	client := served(ctx, t, oneSwitch())
	sw := theSwitch(t, client.Client)
	if err := client.Logout(ctx); err != nil {
		t.Fatalf("logging out: %v", err)
	}
	_, err := sw.FetchDVPorts(ctx, nil)
	f, ok := faultOf(err).(types.NotAuthenticated)
	if !ok {
		t.Fatalf("want NotAuthenticated after logging out, got %v", err)
	}
	if f.Object.Type != sw.Reference().Type || f.Object.Value != sw.Reference().Value {
		t.Fatalf("the fault should name the switch %v, got %v", sw.Reference(), f.Object)
	}
}

func TestEachSwitchsUplinkPortGroupIsMarked(t *testing.T) {
	ctx := context.Background()
	c := served(ctx, t, oneSwitch()).Client
	sw := theSwitch(t, c)
	var dvs mo.DistributedVirtualSwitch
	if err := property.DefaultCollector(c).RetrieveOne(ctx, sw.Reference(), []string{"portgroup", "config"}, &dvs); err != nil {
		t.Fatalf("reading the switch: %v", err)
	}
	var pgs []mo.DistributedVirtualPortgroup
	if err := property.DefaultCollector(c).Retrieve(ctx, dvs.Portgroup, []string{"name", "config"}, &pgs); err != nil {
		t.Fatalf("reading its port groups: %v", err)
	}
	uplinks := map[types.ManagedObjectReference]bool{}
	for _, ref := range dvs.Config.GetDVSConfigInfo().UplinkPortgroup {
		uplinks[ref] = true
	}
	if len(pgs) != 2 {
		t.Fatalf("want the model's port group and the uplink port group, got %d", len(pgs))
	}
	for _, pg := range pgs {
		isUplink := strings.Contains(pg.Name, "-DVUplinks")
		marked := pg.Config.Uplink != nil && *pg.Config.Uplink
		if marked != isUplink || uplinks[pg.Self] != isUplink {
			t.Errorf("port group %s: uplink %v, in the switch's uplinkPortgroup %v; want %v", pg.Name, marked,
				uplinks[pg.Self], isUplink)
		}
	}
}
