package main

import (
	"context"
	"net/http"
	"net/url"
	"strings"
	"testing"

	"github.com/vmware/govmomi"
	"github.com/vmware/govmomi/object"
	"github.com/vmware/govmomi/property"
	"github.com/vmware/govmomi/simulator"
	"github.com/vmware/govmomi/vim25/methods"
	"github.com/vmware/govmomi/vim25/mo"
	"github.com/vmware/govmomi/vim25/types"
)

const testHostUUID = "4c4c4544-0042-3510-8052-b3c04f4e3332"

// servedESX builds an ESX model with one VM, extends it as main does in --esx mode and serves it behind
// the front; it returns a logged-in client, the server and the VM.
func servedESX(ctx context.Context, t *testing.T) (*govmomi.Client, *simulator.Server, *object.VirtualMachine) {
	t.Helper()
	withPlan(t, nicPlan{count: 3})
	m := simulator.ESX()
	m.Machine, m.Autostart = 1, false
	if err := m.Create(); err != nil {
		t.Fatalf("building the host: %v", err)
	}
	extendESX(m, "esx-07.lab", testHostUUID)
	m.Service.Listen = &url.URL{Host: "127.0.0.1:0"}
	srv := serveESX(m)
	t.Cleanup(func() {
		srv.Close()
		m.Remove()
	})
	c := login(ctx, t, srv)
	vms := simulator.Map.All("VirtualMachine")
	if len(vms) != 1 {
		t.Fatalf("the model has %d VMs, want 1", len(vms))
	}
	return c, srv, object.NewVirtualMachine(c.Client, vms[0].Reference())
}

func TestESXIsAHostAgentWithNoVCenterParts(t *testing.T) {
	ctx := context.Background()
	c, _, _ := servedESX(ctx, t)
	sc := c.ServiceContent
	if sc.About.ApiType != "HostAgent" {
		t.Errorf("about.apiType = %q, want HostAgent", sc.About.ApiType)
	}
	if sc.ExtensionManager != nil || sc.CustomFieldsManager != nil || sc.IpPoolManager != nil {
		t.Errorf("content has vCenter-only managers: %v %v %v", sc.ExtensionManager, sc.CustomFieldsManager, sc.IpPoolManager)
	}
	host := esxHost()
	var h mo.HostSystem
	if err := property.DefaultCollector(c.Client).RetrieveOne(ctx, host.Self,
		[]string{"name", "summary", "hardware.systemInfo", "config.network", "configManager"}, &h); err != nil {
		t.Fatal(err)
	}
	if h.Name != "esx-07.lab" || h.Summary.Config.Name != "esx-07.lab" {
		t.Errorf("name %q, summary.config.name %q, want esx-07.lab", h.Name, h.Summary.Config.Name)
	}
	if h.Hardware.SystemInfo.Uuid != testHostUUID || h.Summary.Hardware.Uuid != testHostUUID {
		t.Errorf("hardware uuid %q / %q, want %s", h.Hardware.SystemInfo.Uuid, h.Summary.Hardware.Uuid, testHostUUID)
	}
	if dns := h.Config.Network.DnsConfig.GetHostDnsConfig(); dns.HostName != "esx-07" || dns.DomainName != "lab" {
		t.Errorf("dns %q %q, want esx-07 lab", dns.HostName, dns.DomainName)
	}
	if got := nicDevices(h.Config.Network); strings.Join(got, ",") != "vmnic0,vmnic1,vmnic2" {
		t.Errorf("pnics %v, want vmnic0..2", got)
	}
	if h.ConfigManager.EsxAgentHostManager != nil {
		t.Errorf("configManager.esxAgentHostManager = %v on a host agent", h.ConfigManager.EsxAgentHostManager)
	}
	ns := object.NewHostNetworkSystem(c.Client, *h.ConfigManager.NetworkSystem)
	err := ns.AddVirtualSwitch(ctx, "vSwitch1", &types.HostVirtualSwitchSpec{NumPorts: 64,
		Bridge: &types.HostVirtualSwitchBondBridge{NicDevice: []string{"vmnic1"}}})
	if err != nil {
		t.Fatalf("AddVirtualSwitch: %v", err)
	}
	if err := ns.AddPortGroup(ctx, types.HostPortGroupSpec{Name: "fabric", VlanId: 10, VswitchName: "vSwitch1"}); err != nil {
		t.Fatalf("AddPortGroup: %v", err)
	}
	if portGroupIndex(host.Config.Network, "fabric") < 0 {
		t.Errorf("the port group is not in the host's config.network")
	}
}

func TestESXHasNoEAMAndRefusesExtensionLogin(t *testing.T) {
	ctx := context.Background()
	c, srv, _ := servedESX(ctx, t)
	u := *srv.URL
	u.Path, u.User = "/eam/sdk", nil
	resp, err := http.Post(u.String(), "text/xml", strings.NewReader("<x/>"))
	if err != nil {
		t.Fatal(err)
	}
	_ = resp.Body.Close()
	if resp.StatusCode != http.StatusNotFound {
		t.Errorf("/eam/sdk answered %d, want 404", resp.StatusCode)
	}
	_, err = methods.LoginExtensionByCertificate(ctx, c.Client, &types.LoginExtensionByCertificate{
		This: *c.ServiceContent.SessionManager, ExtensionKey: "org.tungsten.agentvm"})
	if _, ok := faultOf(err).(types.NotSupported); !ok {
		t.Errorf("LoginExtensionByCertificate: %v, want NotSupported", err)
	}
}

func TestESXRefusesPowerOnInMaintenanceMode(t *testing.T) {
	ctx := context.Background()
	c, _, vm := servedESX(ctx, t)
	host := object.NewHostSystem(c.Client, esxHost().Self)
	task, err := host.EnterMaintenanceMode(ctx, 0, false, nil)
	if err != nil || task.Wait(ctx) != nil {
		t.Fatalf("entering maintenance mode: %v", err)
	}
	task, err = vm.PowerOn(ctx)
	if err != nil {
		t.Fatal(err)
	}
	fault, ok := faultOf(task.Wait(ctx)).(types.InvalidHostState)
	if !ok || fault.Host == nil || *fault.Host != host.Reference() {
		t.Fatalf("power-on in maintenance mode: %#v, want InvalidHostState of the host", faultOf(task.Wait(ctx)))
	}
	if state, _ := vm.PowerState(ctx); state != types.VirtualMachinePowerStatePoweredOff {
		t.Errorf("the VM is %s, want poweredOff", state)
	}
	task, _ = host.ExitMaintenanceMode(ctx, 0)
	_ = task.Wait(ctx)
	task, _ = vm.PowerOn(ctx)
	if err := task.Wait(ctx); err != nil {
		t.Fatalf("power-on out of maintenance mode: %v", err)
	}
	if state, _ := vm.PowerState(ctx); state != types.VirtualMachinePowerStatePoweredOn {
		t.Errorf("the VM is %s, want poweredOn", state)
	}
}

func TestESXReconfigSetsVAppProperties(t *testing.T) {
	ctx := context.Background()
	_, _, vm := servedESX(ctx, t)
	reconfig := func(spec types.VirtualMachineConfigSpec) error {
		task, err := vm.Reconfigure(ctx, spec)
		if err != nil {
			return err
		}
		return task.Wait(ctx)
	}
	add := types.VirtualMachineConfigSpec{
		ExtraConfig: []types.BaseOptionValue{&types.OptionValue{Key: "guestinfo.fabricIp", Value: "10.0.0.5"}},
		VAppConfig: &types.VmConfigSpec{Property: []types.VAppPropertySpec{
			{ArrayUpdateSpec: types.ArrayUpdateSpec{Operation: types.ArrayUpdateOperationAdd},
				Info: &types.VAppPropertyInfo{Key: 1, Id: "fabricIp", Type: "string", Value: "10.0.0.5"}},
			{ArrayUpdateSpec: types.ArrayUpdateSpec{Operation: types.ArrayUpdateOperationAdd},
				Info: &types.VAppPropertyInfo{Key: 2, Id: "gateway", Type: "string", Value: "10.0.0.1"}},
		}},
	}
	if err := reconfig(add); err != nil {
		t.Fatalf("adding: %v", err)
	}
	edit := types.VirtualMachineConfigSpec{VAppConfig: &types.VmConfigSpec{Property: []types.VAppPropertySpec{
		{ArrayUpdateSpec: types.ArrayUpdateSpec{Operation: types.ArrayUpdateOperationEdit},
			Info: &types.VAppPropertyInfo{Key: 1, Value: "10.0.0.6"}},
		{ArrayUpdateSpec: types.ArrayUpdateSpec{Operation: types.ArrayUpdateOperationRemove, RemoveKey: int32(2)}},
	}}}
	if err := reconfig(edit); err != nil {
		t.Fatalf("editing: %v", err)
	}
	var got mo.VirtualMachine
	if err := vm.Properties(ctx, vm.Reference(), []string{"config.vAppConfig", "config.extraConfig"}, &got); err != nil {
		t.Fatal(err)
	}
	props := got.Config.VAppConfig.GetVmConfigInfo().Property
	if len(props) != 1 || props[0].Id != "fabricIp" || props[0].Value != "10.0.0.6" || props[0].Type != "string" {
		t.Errorf("properties %+v, want fabricIp=10.0.0.6 alone", props)
	}
	found := false
	for _, o := range got.Config.ExtraConfig {
		found = found || o.GetOptionValue().Key == "guestinfo.fabricIp"
	}
	if !found {
		t.Errorf("extraConfig lost guestinfo.fabricIp: %v", got.Config.ExtraConfig)
	}
	again := types.VirtualMachineConfigSpec{VAppConfig: &types.VmConfigSpec{Property: []types.VAppPropertySpec{
		{ArrayUpdateSpec: types.ArrayUpdateSpec{Operation: types.ArrayUpdateOperationAdd},
			Info: &types.VAppPropertyInfo{Key: 1, Id: "other"}}}}}
	if _, ok := faultOf(reconfig(again)).(types.InvalidArgument); !ok {
		t.Errorf("adding a key twice was not refused with InvalidArgument")
	}
}

func TestESXReconfigKeepsAnEditedNICInItsPlace(t *testing.T) {
	ctx := context.Background()
	_, _, vm := servedESX(ctx, t)
	nics := func() object.VirtualDeviceList {
		devices, err := vm.Device(ctx)
		if err != nil {
			t.Fatal(err)
		}
		return devices.SelectByType((*types.VirtualEthernetCard)(nil))
	}
	add := types.VirtualMachineConfigSpec{DeviceChange: []types.BaseVirtualDeviceConfigSpec{
		&types.VirtualDeviceConfigSpec{Operation: types.VirtualDeviceConfigSpecOperationAdd, Device: &types.VirtualVmxnet3{
			VirtualVmxnet: types.VirtualVmxnet{VirtualEthernetCard: types.VirtualEthernetCard{VirtualDevice: types.VirtualDevice{
				Key:     -1,
				Backing: &types.VirtualEthernetCardNetworkBackingInfo{VirtualDeviceDeviceBackingInfo: types.VirtualDeviceDeviceBackingInfo{DeviceName: "VM Network"}},
			}}}}},
	}}
	task, err := vm.Reconfigure(ctx, add)
	if err == nil {
		err = task.Wait(ctx)
	}
	if err != nil {
		t.Fatalf("adding a NIC: %v", err)
	}
	before := nics()
	if len(before) < 2 {
		t.Fatalf("the VM has %d NICs, want 2 or more", len(before))
	}
	first := before[0].(types.BaseVirtualEthernetCard).GetVirtualEthernetCard()
	first.Backing = &types.VirtualEthernetCardNetworkBackingInfo{VirtualDeviceDeviceBackingInfo: types.VirtualDeviceDeviceBackingInfo{DeviceName: "VM Network"}}
	first.WakeOnLanEnabled = types.NewBool(true)
	edit := types.VirtualMachineConfigSpec{DeviceChange: []types.BaseVirtualDeviceConfigSpec{
		&types.VirtualDeviceConfigSpec{Operation: types.VirtualDeviceConfigSpecOperationEdit, Device: before[0]},
	}}
	task, err = vm.Reconfigure(ctx, edit)
	if err == nil {
		err = task.Wait(ctx)
	}
	if err != nil {
		t.Fatalf("editing the first NIC: %v", err)
	}
	after := nics()
	if len(after) != len(before) {
		t.Fatalf("%d NICs after the edit, want %d", len(after), len(before))
	}
	for i := range before {
		if after[i].GetVirtualDevice().Key != before[i].GetVirtualDevice().Key {
			t.Errorf("NIC %d is key %d after the edit, want %d", i, after[i].GetVirtualDevice().Key,
				before[i].GetVirtualDevice().Key)
		}
	}
	if wol := after[0].(types.BaseVirtualEthernetCard).GetVirtualEthernetCard().WakeOnLanEnabled; wol == nil || !*wol {
		t.Errorf("the first NIC was not edited (wakeOnLanEnabled %v)", wol)
	}
}

func hostMaintenanceState(ctx context.Context, t *testing.T, c *govmomi.Client) (bool, []types.ManagedObjectReference) {
	t.Helper()
	var h mo.HostSystem
	if err := property.DefaultCollector(c.Client).RetrieveOne(ctx, esxHost().Self,
		[]string{"runtime.inMaintenanceMode", "recentTask"}, &h); err != nil {
		t.Fatal(err)
	}
	return h.Runtime.InMaintenanceMode, h.RecentTask
}

func TestESXEnterMaintenanceModeWaitsForThePoweredOnVMs(t *testing.T) {
	ctx := context.Background()
	c, _, vm := servedESX(ctx, t)
	if task, err := vm.PowerOn(ctx); err != nil || task.Wait(ctx) != nil {
		t.Fatalf("power-on: %v", err)
	}
	host := object.NewHostSystem(c.Client, esxHost().Self)
	enter, err := host.EnterMaintenanceMode(ctx, 0, false, nil)
	if err != nil {
		t.Fatal(err)
	}
	var info mo.Task
	if err := property.DefaultCollector(c.Client).RetrieveOne(ctx, enter.Reference(), []string{"info"}, &info); err != nil {
		t.Fatal(err)
	}
	if info.Info.State != types.TaskInfoStateRunning || info.Info.DescriptionId != "HostSystem.enterMaintenanceMode" {
		t.Fatalf("the enter task is %s (%s), want running HostSystem.enterMaintenanceMode", info.Info.State, info.Info.DescriptionId)
	}
	in, recent := hostMaintenanceState(ctx, t, c)
	if in || len(recent) != 1 || recent[0] != enter.Reference() {
		t.Fatalf("while a VM runs: inMaintenanceMode %v, recentTask %v; want false and the enter task", in, recent)
	}
	// no other VM powers on while the host enters maintenance mode
	other := createVM(ctx, t, c, "other")
	task, _ := other.PowerOn(ctx)
	if _, ok := faultOf(task.Wait(ctx)).(types.InvalidHostState); !ok {
		t.Fatalf("power-on while entering: %#v, want InvalidHostState", faultOf(task.Wait(ctx)))
	}
	if in, _ = hostMaintenanceState(ctx, t, c); in {
		t.Fatal("in maintenance mode while a VM still runs")
	}
	if task, err := vm.PowerOff(ctx); err != nil || task.Wait(ctx) != nil {
		t.Fatalf("power-off: %v", err)
	}
	if err := enter.Wait(ctx); err != nil {
		t.Fatalf("the enter task once no VM runs: %v", err)
	}
	in, recent = hostMaintenanceState(ctx, t, c)
	if !in || len(recent) != 0 {
		t.Fatalf("after it: inMaintenanceMode %v, recentTask %v; want true and none running", in, recent)
	}
	exit, _ := host.ExitMaintenanceMode(ctx, 0)
	if err := exit.Wait(ctx); err != nil {
		t.Fatal(err)
	}
	if in, _ = hostMaintenanceState(ctx, t, c); in {
		t.Fatal("still in maintenance mode after the exit")
	}
}

func TestESXEnterMaintenanceModeTimesOutWhileAVMRuns(t *testing.T) {
	ctx := context.Background()
	c, _, vm := servedESX(ctx, t)
	if task, err := vm.PowerOn(ctx); err != nil || task.Wait(ctx) != nil {
		t.Fatalf("power-on: %v", err)
	}
	host := object.NewHostSystem(c.Client, esxHost().Self)
	enter, _ := host.EnterMaintenanceMode(ctx, 1, false, nil)
	if _, ok := faultOf(enter.Wait(ctx)).(types.Timedout); !ok {
		t.Fatalf("enter with a VM running and a 1 s timeout: %#v, want Timedout", faultOf(enter.Wait(ctx)))
	}
	if in, recent := hostMaintenanceState(ctx, t, c); in || len(recent) != 0 {
		t.Fatalf("after the timeout: inMaintenanceMode %v, recentTask %v; want false, none", in, recent)
	}
	if state, _ := vm.PowerState(ctx); state != types.VirtualMachinePowerStatePoweredOn {
		t.Errorf("the VM is %s, want still poweredOn", state)
	}
}

// createVM makes a powered-off VM on the ESX model's host, in its root pool and VM folder.
func createVM(ctx context.Context, t *testing.T, c *govmomi.Client, name string) *object.VirtualMachine {
	t.Helper()
	dc := simulator.Map.All("Datacenter")[0].(*simulator.Datacenter)
	folder := object.NewFolder(c.Client, dc.VmFolder)
	pool := object.NewResourcePool(c.Client, simulator.Map.All("ResourcePool")[0].Reference())
	host := object.NewHostSystem(c.Client, esxHost().Self)
	ds := simulator.Map.All("Datastore")[0].(*simulator.Datastore)
	spec := types.VirtualMachineConfigSpec{Name: name, GuestId: "otherGuest", NumCPUs: 1, MemoryMB: 64,
		Files: &types.VirtualMachineFileInfo{VmPathName: "[" + ds.Name + "]"}}
	task, err := folder.CreateVM(ctx, spec, pool, host)
	if err != nil {
		t.Fatal(err)
	}
	info, err := task.WaitForResult(ctx, nil)
	if err != nil {
		t.Fatalf("creating %s: %v", name, err)
	}
	return object.NewVirtualMachine(c.Client, info.Result.(types.ManagedObjectReference))
}
