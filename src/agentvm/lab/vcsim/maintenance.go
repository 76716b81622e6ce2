package main

import (
	"bytes"
	"regexp"
	"sync"
	"time"

	"github.com/vmware/govmomi/simulator"
	"github.com/vmware/govmomi/vim25/methods"
	"github.com/vmware/govmomi/vim25/soap"
	"github.com/vmware/govmomi/vim25/types"
)

// PowerOnVM_Task refused while the VM's host is in maintenance mode, as ESXi refuses it ("The operation
// is not allowed in the current state of the host": the task fails with InvalidHostState, an
// InvalidState). 0.24.2 powers the VM on. Its VirtualMachine type cannot be replaced (the simulator
// type-asserts it), so in ESX mode the front routes PowerOnVM_Task to a powerGuard per VM, registered
// under the moref type "AgentvmPowerGuard" (the DV port routing's pattern, dvports.go), which checks the
// host and otherwise lets the VM answer. ReconfigVM_Task goes the same way (vapp.go).

const powerGuardType = "AgentvmPowerGuard"

var rePowerOn = regexp.MustCompile(
	`(?s)(<(?:PowerOnVM_Task|ReconfigVM_Task)\b[^>]*>\s*<_this\b[^>]*?type=")(VirtualMachine)("[^>]*>)([^<]*)(</_this>)`)

type powerGuard struct {
	self types.ManagedObjectReference
	vm   types.ManagedObjectReference
}

func (g *powerGuard) Reference() types.ManagedObjectReference { return g.self }

// routePowerOn rewrites the _this of a PowerOnVM_Task or ReconfigVM_Task of an existing VM to its powerGuard; it returns the
// body and the routed type ("" when nothing was routed).
func routePowerOn(body []byte) ([]byte, string) {
	m := rePowerOn.FindSubmatchIndex(body)
	if m == nil {
		return body, ""
	}
	vm := types.ManagedObjectReference{Type: "VirtualMachine", Value: string(body[m[8]:m[9]])}
	if simulator.Map.Get(vm) == nil {
		return body, "" // the simulator answers ManagedObjectNotFound
	}
	self := types.ManagedObjectReference{Type: powerGuardType, Value: vm.Value}
	dvPortsMu.Lock()
	if simulator.Map.Get(self) == nil {
		simulator.Map.Put(&powerGuard{self: self, vm: vm})
	}
	dvPortsMu.Unlock()
	var b bytes.Buffer
	b.Write(body[:m[4]])
	b.WriteString(powerGuardType)
	b.Write(body[m[5]:])
	return b.Bytes(), powerGuardType
}

func (g *powerGuard) PowerOnVMTask(ctx *simulator.Context, req *types.PowerOnVM_Task) soap.HasFault {
	vm, ok := simulator.Map.Get(g.vm).(*simulator.VirtualMachine)
	if !ok {
		return &methods.PowerOnVM_TaskBody{Fault_: simulator.Fault("", &types.ManagedObjectNotFound{Obj: g.vm})}
	}
	var hostRef *types.ManagedObjectReference
	ctx.WithLock(vm, func() { hostRef = vm.Runtime.Host })
	if hostRef != nil {
		if host, ok := simulator.Map.Get(*hostRef).(*simulator.HostSystem); ok {
			var inMaintenance bool
			ctx.WithLock(host, func() { inMaintenance = host.Runtime.InMaintenanceMode })
			inMaintenance = inMaintenance || enteringMaintenance(host.Self)
			if inMaintenance {
				ref := host.Self
				task := simulator.CreateTask(vm, "powerOn", func(*simulator.Task) (types.AnyType, types.BaseMethodFault) {
					return nil, &types.InvalidHostState{Host: &ref}
				})
				taskRef := task.Run()
				simulator.Map.Update(task, []types.PropertyChange{{Name: "info.error", Val: types.LocalizedMethodFault{
					Fault:            &types.InvalidHostState{Host: &host.Self},
					LocalizedMessage: "The operation is not allowed in the current state of the host.",
				}}})
				return &methods.PowerOnVM_TaskBody{Res: &types.PowerOnVM_TaskResponse{Returnval: taskRef}}
			}
		}
	}
	req.This = g.vm
	var res soap.HasFault
	ctx.WithLock(vm, func() { res = vm.PowerOnVMTask(ctx, req) })
	return res
}

// EnterMaintenanceMode_Task and ExitMaintenanceMode_Task as a standalone ESXi runs them. 0.24.2 sets
// runtime.inMaintenanceMode at once, whatever runs on the host, and tells no property collector. ESXi's
// task does not complete while a VM on the host is powered on (on a host agent nothing moves them: someone
// must power them off, or suspend them), and fails with Timeout when its timeout (seconds; 0 or less:
// none) passes first; while it runs the host is not in maintenance mode yet, PowerOnVM_Task is refused as
// in maintenance mode, and the task is in the host's recentTask (how a client sees that the host is
// entering maintenance mode: the host's own state says nothing until it is in). Entering and leaving
// update runtime.inMaintenanceMode through the property collector. The front routes both calls of the
// host to a maintenanceGuard (type "AgentvmMaintenanceGuard"), as PowerOnVM_Task to a powerGuard.

const maintenanceGuardType = "AgentvmMaintenanceGuard"

var (
	reMaintenance = regexp.MustCompile(
		`(?s)(<(?:EnterMaintenanceMode_Task|ExitMaintenanceMode_Task)\b[^>]*>\s*<_this\b[^>]*?type=")(HostSystem)("[^>]*>)([^<]*)(</_this>)`)
	// hosts entering maintenance mode (their EnterMaintenanceMode_Task runs), guarded by enteringMu
	enteringMu sync.Mutex
	entering   = map[types.ManagedObjectReference]*simulator.Task{}
	// how often a running EnterMaintenanceMode_Task looks at the host's VMs again
	maintenancePoll = 50 * time.Millisecond
)

type maintenanceGuard struct {
	self types.ManagedObjectReference
	host types.ManagedObjectReference
}

func (g *maintenanceGuard) Reference() types.ManagedObjectReference { return g.self }

// routeMaintenance rewrites the _this of a host's Enter/ExitMaintenanceMode_Task to its maintenanceGuard;
// it returns the body and the routed type ("" when nothing was routed).
func routeMaintenance(body []byte) ([]byte, string) {
	m := reMaintenance.FindSubmatchIndex(body)
	if m == nil {
		return body, ""
	}
	host := types.ManagedObjectReference{Type: "HostSystem", Value: string(body[m[8]:m[9]])}
	if _, ok := simulator.Map.Get(host).(*simulator.HostSystem); !ok {
		return body, ""
	}
	self := types.ManagedObjectReference{Type: maintenanceGuardType, Value: host.Value}
	dvPortsMu.Lock()
	if simulator.Map.Get(self) == nil {
		simulator.Map.Put(&maintenanceGuard{self: self, host: host})
	}
	dvPortsMu.Unlock()
	var b bytes.Buffer
	b.Write(body[:m[4]])
	b.WriteString(maintenanceGuardType)
	b.Write(body[m[5]:])
	return b.Bytes(), maintenanceGuardType
}

// enteringMaintenance tells whether the host's EnterMaintenanceMode_Task is running.
func enteringMaintenance(host types.ManagedObjectReference) bool {
	enteringMu.Lock()
	defer enteringMu.Unlock()
	return entering[host] != nil
}

// poweredOnVMs counts the host's VMs that are powered on.
func poweredOnVMs(host *simulator.HostSystem) int {
	var refs []types.ManagedObjectReference
	simulator.Map.WithLock(host, func() { refs = append(refs, host.Vm...) })
	n := 0
	for _, ref := range refs {
		if vm, ok := simulator.Map.Get(ref).(*simulator.VirtualMachine); ok {
			simulator.Map.WithLock(vm, func() {
				if vm.Runtime.PowerState == types.VirtualMachinePowerStatePoweredOn {
					n++
				}
			})
		}
	}
	return n
}

// setRecentTask adds (or removes) a task to the host's recentTask, told to the property collector.
func setRecentTask(host *simulator.HostSystem, task types.ManagedObjectReference, add bool) {
	simulator.Map.WithLock(host, func() {
		var next []types.ManagedObjectReference
		for _, t := range host.RecentTask {
			if t != task {
				next = append(next, t)
			}
		}
		if add {
			next = append(next, task)
		}
		simulator.Map.Update(host, []types.PropertyChange{{Name: "recentTask", Val: next}})
	})
}

func setInMaintenance(host *simulator.HostSystem, in bool) {
	simulator.Map.WithLock(host, func() {
		host.Runtime.InMaintenanceMode = in
		simulator.Map.Update(host, []types.PropertyChange{{Name: "runtime.inMaintenanceMode", Val: in}})
	})
}

func finishTask(task *simulator.Task, fault types.BaseMethodFault, message string) {
	state := types.TaskInfoStateSuccess
	var err interface{}
	if fault != nil {
		state = types.TaskInfoStateError
		err = types.LocalizedMethodFault{Fault: fault, LocalizedMessage: message}
	}
	simulator.Map.Update(task, []types.PropertyChange{
		{Name: "info.completeTime", Val: time.Now()},
		{Name: "info.state", Val: state},
		{Name: "info.error", Val: err},
	})
}

func (g *maintenanceGuard) EnterMaintenanceModeTask(ctx *simulator.Context, req *types.EnterMaintenanceMode_Task) soap.HasFault {
	host, ok := simulator.Map.Get(g.host).(*simulator.HostSystem)
	if !ok {
		return &methods.EnterMaintenanceMode_TaskBody{Fault_: simulator.Fault("", &types.ManagedObjectNotFound{Obj: g.host})}
	}
	task := simulator.CreateTask(host, "enterMaintenanceMode", nil)
	simulator.Map.Update(task, []types.PropertyChange{
		{Name: "info.startTime", Val: time.Now()},
		{Name: "info.state", Val: types.TaskInfoStateRunning},
	})
	var in bool
	simulator.Map.WithLock(host, func() { in = host.Runtime.InMaintenanceMode })
	enteringMu.Lock()
	busy := entering[g.host] != nil
	if !busy && !in {
		entering[g.host] = task
	}
	enteringMu.Unlock()
	switch {
	case in: // already in: done
		finishTask(task, nil, "")
	case busy:
		finishTask(task, &types.InvalidState{}, "The host is already entering maintenance mode.")
	default:
		setRecentTask(host, task.Self, true)
		var deadline time.Time
		if req.Timeout > 0 {
			deadline = time.Now().Add(time.Duration(req.Timeout) * time.Second)
		}
		go g.waitForVMs(host, task, deadline)
	}
	return &methods.EnterMaintenanceMode_TaskBody{Res: &types.EnterMaintenanceMode_TaskResponse{Returnval: task.Self}}
}

// waitForVMs completes an EnterMaintenanceMode_Task once no VM of the host is powered on, or fails it at
// the deadline (zero: none) or when the host leaves the entering state meanwhile (an exit cancels it).
func (g *maintenanceGuard) waitForVMs(host *simulator.HostSystem, task *simulator.Task, deadline time.Time) {
	defer setRecentTask(host, task.Self, false)
	for {
		enteringMu.Lock()
		still := entering[g.host] == task
		enteringMu.Unlock()
		if !still {
			finishTask(task, &types.RequestCanceled{}, "The host left maintenance mode before it was in.")
			return
		}
		if poweredOnVMs(host) == 0 {
			setInMaintenance(host, true)
			enteringMu.Lock()
			delete(entering, g.host)
			enteringMu.Unlock()
			finishTask(task, nil, "")
			return
		}
		if !deadline.IsZero() && time.Now().After(deadline) {
			enteringMu.Lock()
			delete(entering, g.host)
			enteringMu.Unlock()
			finishTask(task, &types.Timedout{}, "Operation timed out: the host's virtual machines are still powered on.")
			return
		}
		time.Sleep(maintenancePoll)
	}
}

func (g *maintenanceGuard) ExitMaintenanceModeTask(ctx *simulator.Context, req *types.ExitMaintenanceMode_Task) soap.HasFault {
	host, ok := simulator.Map.Get(g.host).(*simulator.HostSystem)
	if !ok {
		return &methods.ExitMaintenanceMode_TaskBody{Fault_: simulator.Fault("", &types.ManagedObjectNotFound{Obj: g.host})}
	}
	task := simulator.CreateTask(host, "exitMaintenanceMode", func(*simulator.Task) (types.AnyType, types.BaseMethodFault) {
		enteringMu.Lock()
		delete(entering, g.host) // a running enter is cancelled
		enteringMu.Unlock()
		setInMaintenance(host, false)
		return nil, nil
	})
	return &methods.ExitMaintenanceMode_TaskBody{Res: &types.ExitMaintenanceMode_TaskResponse{Returnval: task.Run()}}
}
