// agentvm-vcsim: VMware's vCenter simulator (govmomi 0.24.2, from Debian) with what agentvm's lab needs
// and 0.24.2 lacks:
//
//   - ExtensionManager: Register/Unregister/Find/UpdateExtension, SetExtensionCertificate, extensionList.
//   - HostEsxAgentHostManager on every host (configManager.esxAgentHostManager, configInfo,
//     EsxAgentHostManagerUpdateConfig), mirrored in summary.config.agentVmDatastore/agentVmNetwork.
//   - LoginExtensionByCertificate checked against the certificate set with SetExtensionCertificate.
//   - /eam/sdk forwarded to an EAM backend (agentvm's EAM emulator), so vim25 and EAM share one
//     endpoint and one session cookie, as on a real vCenter. The backend learns who a cookie belongs
//     to by reading sessionManager.currentSession with that cookie.
//
// It listens on loopback only and prints one JSON line when ready:
//
//	{"url": "https://127.0.0.1:PORT/sdk", "username": ..., "password": ..., "thumbprint": ...,
//	 "instance_uuid": ..., ...}
//
// Built by `agentvm lab build` with GO111MODULE=off GOPATH=/usr/share/gocode.
package main

import (
	"bytes"
	"context"
	"crypto/ecdsa"
	"crypto/elliptic"
	"crypto/rand"
	"crypto/sha1" //nolint:gosec // vSphere thumbprints are SHA-1 by convention
	"crypto/sha256"
	"crypto/tls"
	"crypto/x509"
	"crypto/x509/pkix"
	"encoding/hex"
	"encoding/json"
	"encoding/pem"
	"flag"
	"fmt"
	"io"
	"math/big"
	"net"
	"net/http"
	"net/http/httputil"
	"net/url"
	"os"
	"os/signal"
	"reflect"
	"regexp"
	"strings"
	"sync"
	"syscall"
	"time"

	"github.com/vmware/govmomi/object"
	"github.com/vmware/govmomi/simulator"
	"github.com/vmware/govmomi/simulator/esx"
	"github.com/vmware/govmomi/view"
	"github.com/vmware/govmomi/vim25"
	"github.com/vmware/govmomi/vim25/methods"
	"github.com/vmware/govmomi/vim25/mo"
	"github.com/vmware/govmomi/vim25/soap"
	"github.com/vmware/govmomi/vim25/types"
)

// exit codes, so the Python side can tell the causes apart
const (
	exitUsage  = 2
	exitListen = 3
	exitModel  = 4
)

func fail(code int, format string, args ...interface{}) {
	fmt.Fprintf(os.Stderr, "agentvm-vcsim: "+format+"\n", args...)
	os.Exit(code)
}

// thumbprint returns the SHA-1 thumbprint of a DER certificate in vSphere's form (AA:BB:...).
func thumbprint(der []byte) string {
	sum := sha1.Sum(der) //nolint:gosec
	return colonHex(sum[:])
}

func colonHex(b []byte) string {
	h := strings.ToUpper(hex.EncodeToString(b))
	parts := make([]string, 0, len(h)/2)
	for i := 0; i < len(h); i += 2 {
		parts = append(parts, h[i:i+2])
	}
	return strings.Join(parts, ":")
}

// selfSigned makes a fresh certificate for 127.0.0.1 and localhost, so every lab has its own thumbprint.
func selfSigned() (tls.Certificate, error) {
	key, err := ecdsa.GenerateKey(elliptic.P256(), rand.Reader)
	if err != nil {
		return tls.Certificate{}, err
	}
	serial, _ := rand.Int(rand.Reader, big.NewInt(1<<62))
	tmpl := x509.Certificate{
		SerialNumber: serial,
		Subject:      pkix.Name{CommonName: "127.0.0.1", Organization: []string{"agentvm lab"}},
		NotBefore:    time.Now().Add(-time.Hour),
		NotAfter:     time.Now().Add(365 * 24 * time.Hour),
		KeyUsage:     x509.KeyUsageDigitalSignature | x509.KeyUsageKeyEncipherment,
		ExtKeyUsage:  []x509.ExtKeyUsage{x509.ExtKeyUsageServerAuth},
		IPAddresses:  []net.IP{net.ParseIP("127.0.0.1")},
		DNSNames:     []string{"localhost"},
	}
	der, err := x509.CreateCertificate(rand.Reader, &tmpl, &tmpl, &key.PublicKey, key)
	if err != nil {
		return tls.Certificate{}, err
	}
	return tls.Certificate{Certificate: [][]byte{der}, PrivateKey: key}, nil
}

// ---------------------------------------------------------------------------------------------------
// ExtensionManager

type certStore struct {
	mu sync.Mutex
	tp map[string]string // extension key -> SHA-1 thumbprint of its certificate
}

func (c *certStore) get(key string) (string, bool) {
	c.mu.Lock()
	defer c.mu.Unlock()
	v, ok := c.tp[key]
	return v, ok
}

func (c *certStore) set(key, tp string) {
	c.mu.Lock()
	defer c.mu.Unlock()
	c.tp[key] = tp
}

func (c *certStore) del(key string) {
	c.mu.Lock()
	defer c.mu.Unlock()
	delete(c.tp, key)
}

var certs = &certStore{tp: map[string]string{}}

type ExtensionManager struct {
	mo.ExtensionManager
}

func (m *ExtensionManager) find(key string) int {
	for i := range m.ExtensionList {
		if m.ExtensionList[i].Key == key {
			return i
		}
	}
	return -1
}

func (m *ExtensionManager) publish() {
	list := append([]types.Extension(nil), m.ExtensionList...)
	simulator.Map.Update(m, []types.PropertyChange{{Name: "extensionList", Val: list}})
}

func notFound(what string) *soap.Fault {
	return simulator.Fault(what+" not found", &types.NotFound{})
}

func (m *ExtensionManager) RegisterExtension(req *types.RegisterExtension) soap.HasFault {
	body := new(methods.RegisterExtensionBody)
	ext := req.Extension
	if ext.Key == "" {
		body.Fault_ = simulator.Fault("extension.key is required", &types.InvalidArgument{InvalidProperty: "extension.key"})
		return body
	}
	if m.find(ext.Key) >= 0 {
		body.Fault_ = simulator.Fault(fmt.Sprintf("extension %q is already registered", ext.Key),
			&types.InvalidArgument{InvalidProperty: "extension.key"})
		return body
	}
	ext.LastHeartbeatTime = time.Now().UTC()
	m.ExtensionList = append(m.ExtensionList, ext)
	m.publish()
	body.Res = new(types.RegisterExtensionResponse)
	return body
}

func (m *ExtensionManager) UnregisterExtension(req *types.UnregisterExtension) soap.HasFault {
	body := new(methods.UnregisterExtensionBody)
	i := m.find(req.ExtensionKey)
	if i < 0 {
		body.Fault_ = notFound(fmt.Sprintf("extension %q", req.ExtensionKey))
		return body
	}
	m.ExtensionList = append(m.ExtensionList[:i:i], m.ExtensionList[i+1:]...)
	certs.del(req.ExtensionKey)
	m.publish()
	body.Res = new(types.UnregisterExtensionResponse)
	return body
}

func (m *ExtensionManager) FindExtension(req *types.FindExtension) soap.HasFault {
	body := &methods.FindExtensionBody{Res: new(types.FindExtensionResponse)}
	if i := m.find(req.ExtensionKey); i >= 0 {
		ext := m.ExtensionList[i]
		body.Res.Returnval = &ext
	}
	return body
}

func (m *ExtensionManager) UpdateExtension(req *types.UpdateExtension) soap.HasFault {
	body := new(methods.UpdateExtensionBody)
	i := m.find(req.Extension.Key)
	if i < 0 {
		body.Fault_ = notFound(fmt.Sprintf("extension %q", req.Extension.Key))
		return body
	}
	ext := req.Extension
	ext.LastHeartbeatTime = time.Now().UTC()
	m.ExtensionList[i] = ext
	m.publish()
	body.Res = new(types.UpdateExtensionResponse)
	return body
}

func (m *ExtensionManager) SetExtensionCertificate(req *types.SetExtensionCertificate) soap.HasFault {
	body := new(methods.SetExtensionCertificateBody)
	if m.find(req.ExtensionKey) < 0 {
		body.Fault_ = notFound(fmt.Sprintf("extension %q", req.ExtensionKey))
		return body
	}
	// With no certificatePem the API takes the caller's TLS client certificate; the HTTP front
	// (frontHandler) has put it into the request, so an empty one here means there was none.
	if req.CertificatePem == "" {
		body.Fault_ = simulator.Fault("no certificatePem and no TLS client certificate", new(types.NoClientCertificate))
		return body
	}
	block, _ := pem.Decode([]byte(req.CertificatePem))
	if block == nil {
		body.Fault_ = simulator.Fault("certificatePem is not a PEM certificate",
			&types.InvalidArgument{InvalidProperty: "certificatePem"})
		return body
	}
	if _, err := x509.ParseCertificate(block.Bytes); err != nil {
		body.Fault_ = simulator.Fault("certificatePem: "+err.Error(), &types.InvalidArgument{InvalidProperty: "certificatePem"})
		return body
	}
	certs.set(req.ExtensionKey, thumbprint(block.Bytes))
	body.Res = new(types.SetExtensionCertificateResponse)
	return body
}

// ---------------------------------------------------------------------------------------------------
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

// agentManagers gives every host that lacks one its EsxAgentHostManager. It runs after the model is
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

// ---------------------------------------------------------------------------------------------------
// Paging: 0.24.2's RetrievePropertiesEx ignores options.maxObjects and has no Continue/Cancel. A real
// vCenter pages, and agentvm's reads must prove they follow tokens and always cancel cursors.

// The simulator makes a zero-valued copy of this type per session (reflect.New), so the collector is
// embedded by value (it finds an object's mo type by walking first fields) and the cursors live in one
// shared pager.
type pagingCollector struct {
	simulator.PropertyCollector
}

// CreatePropertyCollector hands out a batchingCollector instead of 0.24.2's own (see below).
func (p *pagingCollector) CreatePropertyCollector(ctx *simulator.Context, c *types.CreatePropertyCollector) soap.HasFault {
	pc := &batchingCollector{}
	pc.Self.Type = "PropertyCollector" // otherwise the reference's type would be the Go type's name
	return &methods.CreatePropertyCollectorBody{
		Res: &types.CreatePropertyCollectorResponse{Returnval: ctx.Session.Put(pc).Reference()},
	}
}

// ---------------------------------------------------------------------------------------------------
// WaitForUpdatesEx that stays cheap on a large inventory.
//
// 0.24.2's collector re-runs its filters' whole retrieve once for EVERY object change in the simulator
// (tasks, task manager, events, views included), to find objects that entered the filter: a watch on all
// hosts and VMs of a 2,500-host lab costs updates x 2,500 objects, so a deploy (thousands of task
// updates) made one WaitForUpdatesEx last minutes, past the client's HTTP timeout, and the backlog only
// grew (the lab's EAM and the controller hung). This collector instead notes that something relevant
// changed (an object of a type its filters select or traverse, or a container view) and, at most every
// 250 ms, retrieves each filter once and reports the difference from what it reported before: enter for
// new objects, modify with the changed properties (remove for a property that became unset), leave for
// objects gone. Other methods (CreateFilter, RetrievePropertiesEx, ...) are 0.24.2's.
type batchingCollector struct {
	simulator.PropertyCollector // first field: the simulator finds the mo type by walking first fields

	mu     sync.Mutex
	dirty  bool
	types  map[string]bool // object types whose changes may change a filter's result
	cancel context.CancelFunc
	known  map[types.ManagedObjectReference]map[types.ManagedObjectReference]map[string]types.AnyType
	seq    int
}

func (pc *batchingCollector) changed(kind string) {
	pc.mu.Lock()
	if kind == "ContainerView" || pc.types[kind] {
		pc.dirty = true
	}
	pc.mu.Unlock()
}

// PutObject, UpdateObject, RemoveObject: the registry's handlers (simulator.RegisterObject).
func (pc *batchingCollector) PutObject(o mo.Reference) { pc.changed(o.Reference().Type) }
func (pc *batchingCollector) UpdateObject(o mo.Reference, _ []types.PropertyChange) {
	pc.changed(o.Reference().Type)
}
func (pc *batchingCollector) RemoveObject(ref types.ManagedObjectReference) { pc.changed(ref.Type) }

func (pc *batchingCollector) CancelWaitForUpdates(r *types.CancelWaitForUpdates) soap.HasFault {
	pc.mu.Lock()
	if pc.cancel != nil {
		pc.cancel()
	}
	pc.mu.Unlock()
	return &methods.CancelWaitForUpdatesBody{Res: new(types.CancelWaitForUpdatesResponse)}
}

func (pc *batchingCollector) DestroyPropertyCollector(ctx *simulator.Context, c *types.DestroyPropertyCollector) soap.HasFault {
	pc.CancelWaitForUpdates(&types.CancelWaitForUpdates{This: c.This})
	return pc.PropertyCollector.DestroyPropertyCollector(ctx, c) // also removes the registry handler
}

// diff retrieves every filter once and returns what changed since the last call (all of it as enter
// when reset). A filter destroyed meanwhile is skipped.
func (pc *batchingCollector) diff(ctx *simulator.Context, reset bool) ([]types.PropertyFilterUpdate, types.BaseMethodFault) {
	pc.mu.Lock()
	if reset || pc.known == nil {
		pc.known = map[types.ManagedObjectReference]map[types.ManagedObjectReference]map[string]types.AnyType{}
	}
	pc.types = map[string]bool{}
	filters := append([]types.ManagedObjectReference(nil), pc.Filter...)
	pc.mu.Unlock()

	var updates []types.PropertyFilterUpdate
	for _, ref := range filters {
		filter, ok := ctx.Session.Get(ref).(*simulator.PropertyFilter)
		if !ok {
			continue
		}
		pc.mu.Lock()
		for _, ps := range filter.Spec.PropSet {
			pc.types[ps.Type] = true
		}
		for _, os := range filter.Spec.ObjectSet {
			for _, sel := range os.SelectSet {
				if ts, ok := sel.(*types.TraversalSpec); ok {
					pc.types[ts.Type] = true
				}
			}
		}
		pc.mu.Unlock()
		res := pc.PropertyCollector.RetrievePropertiesEx(ctx, &types.RetrievePropertiesEx{SpecSet: []types.PropertyFilterSpec{filter.Spec}})
		body := res.(*methods.RetrievePropertiesExBody)
		if body.Fault_ != nil {
			return nil, body.Fault_.VimFault().(types.BaseMethodFault)
		}
		now := map[types.ManagedObjectReference]map[string]types.AnyType{}
		if body.Res != nil && body.Res.Returnval != nil {
			for _, o := range body.Res.Returnval.Objects {
				props := map[string]types.AnyType{}
				for _, p := range o.PropSet {
					props[p.Name] = p.Val
				}
				now[o.Obj] = props
			}
		}
		before := pc.known[ref]
		fu := types.PropertyFilterUpdate{Filter: ref}
		for obj, props := range now {
			old, seen := before[obj]
			ou := types.ObjectUpdate{Obj: obj, Kind: types.ObjectUpdateKindModify}
			if !seen {
				ou.Kind = types.ObjectUpdateKindEnter
			}
			for name, val := range props {
				if prev, had := old[name]; !had || !reflect.DeepEqual(prev, val) {
					ou.ChangeSet = append(ou.ChangeSet, types.PropertyChange{Name: name, Op: types.PropertyChangeOpAssign, Val: val})
				}
			}
			for name := range old {
				if _, has := props[name]; !has {
					ou.ChangeSet = append(ou.ChangeSet, types.PropertyChange{Name: name, Op: types.PropertyChangeOpRemove})
				}
			}
			if !seen || len(ou.ChangeSet) > 0 {
				fu.ObjectSet = append(fu.ObjectSet, ou)
			}
		}
		for obj := range before {
			if _, ok := now[obj]; !ok {
				fu.ObjectSet = append(fu.ObjectSet, types.ObjectUpdate{Obj: obj, Kind: types.ObjectUpdateKindLeave})
			}
		}
		pc.known[ref] = now
		if len(fu.ObjectSet) > 0 {
			updates = append(updates, fu)
		}
	}
	return updates, nil
}

// WaitForUpdatesEx: version "" reports everything (enter) at once; any other version waits, up to
// maxWaitSeconds (0: check once), for the next difference (nil on timeout, RequestCanceled on cancel).
func (pc *batchingCollector) WaitForUpdatesEx(ctx *simulator.Context, r *types.WaitForUpdatesEx) soap.HasFault {
	body := &methods.WaitForUpdatesExBody{}
	fail := func(fault types.BaseMethodFault) soap.HasFault {
		body.Fault_ = simulator.Fault("", fault)
		return body
	}
	reply := func(updates []types.PropertyFilterUpdate) soap.HasFault {
		pc.mu.Lock()
		pc.seq++
		version := fmt.Sprint(pc.seq)
		pc.mu.Unlock()
		body.Res = &types.WaitForUpdatesExResponse{Returnval: &types.UpdateSet{Version: version, FilterSet: updates}}
		return body
	}
	if r.Version == "" {
		ctx.Map.AddHandler(pc) // from now on, note relevant changes (before the read: none is lost)
		updates, fault := pc.diff(ctx, true)
		if fault != nil {
			return fail(fault)
		}
		return reply(updates)
	}

	wait, cancel := context.WithCancel(context.Background())
	once := false
	if r.Options != nil && r.Options.MaxWaitSeconds != nil {
		once = *r.Options.MaxWaitSeconds == 0
		if *r.Options.MaxWaitSeconds > 0 {
			wait, cancel = context.WithTimeout(context.Background(), time.Second*time.Duration(*r.Options.MaxWaitSeconds))
		}
	}
	defer cancel()
	pc.mu.Lock()
	pc.cancel = cancel
	pc.mu.Unlock()

	ticker := time.NewTicker(250 * time.Millisecond) // let changes accumulate, as 0.24.2 does
	defer ticker.Stop()
	for {
		pc.mu.Lock()
		dirty := pc.dirty
		pc.dirty = false
		pc.mu.Unlock()
		if dirty {
			updates, fault := pc.diff(ctx, false)
			if fault != nil {
				return fail(fault)
			}
			if len(updates) > 0 {
				return reply(updates)
			}
		}
		if once {
			body.Res = &types.WaitForUpdatesExResponse{}
			return body
		}
		select {
		case <-wait.Done():
			if wait.Err() == context.Canceled {
				return fail(new(types.RequestCanceled))
			}
			body.Res = &types.WaitForUpdatesExResponse{} // maxWaitSeconds elapsed: no update set
			return body
		case <-ticker.C:
		}
	}
}

type pager struct {
	mu    sync.Mutex
	pages map[string][]types.ObjectContent // token -> the objects not yet returned
	sizes map[string]int                   // token -> page size asked for by the first call
	seq   int
}

var cursors = &pager{pages: map[string][]types.ObjectContent{}, sizes: map[string]int{}}

func (p *pager) page(objects []types.ObjectContent, max int) *types.RetrieveResult {
	res := &types.RetrieveResult{Objects: objects}
	if max <= 0 || len(objects) <= max {
		return res
	}
	p.mu.Lock()
	defer p.mu.Unlock()
	p.seq++
	token := fmt.Sprintf("page-%d", p.seq)
	p.pages[token] = objects[max:]
	p.sizes[token] = max
	res.Objects = objects[:max]
	res.Token = token
	return res
}

// take removes a cursor and returns what it still held.
func (p *pager) take(token string) ([]types.ObjectContent, int, bool) {
	p.mu.Lock()
	defer p.mu.Unlock()
	rest, ok := p.pages[token]
	size := p.sizes[token]
	delete(p.pages, token)
	delete(p.sizes, token)
	return rest, size, ok
}

func (p *pagingCollector) RetrievePropertiesEx(ctx *simulator.Context, r *types.RetrievePropertiesEx) soap.HasFault {
	res := p.PropertyCollector.RetrievePropertiesEx(ctx, r)
	body, ok := res.(*methods.RetrievePropertiesExBody)
	if !ok || body.Res == nil || body.Res.Returnval == nil {
		return res
	}
	body.Res.Returnval = cursors.page(body.Res.Returnval.Objects, int(r.Options.MaxObjects))
	return body
}

func (p *pagingCollector) ContinueRetrievePropertiesEx(r *types.ContinueRetrievePropertiesEx) soap.HasFault {
	body := new(methods.ContinueRetrievePropertiesExBody)
	rest, size, ok := cursors.take(r.Token)
	if !ok {
		body.Fault_ = simulator.Fault("unknown or finished token "+r.Token, &types.InvalidArgument{InvalidProperty: "token"})
		return body
	}
	body.Res = &types.ContinueRetrievePropertiesExResponse{Returnval: *cursors.page(rest, size)}
	return body
}

func (p *pagingCollector) CancelRetrievePropertiesEx(r *types.CancelRetrievePropertiesEx) soap.HasFault {
	body := new(methods.CancelRetrievePropertiesExBody)
	if _, _, ok := cursors.take(r.Token); !ok {
		body.Fault_ = simulator.Fault("unknown or finished token "+r.Token, &types.InvalidArgument{InvalidProperty: "token"})
		return body
	}
	body.Res = new(types.CancelRetrievePropertiesExResponse)
	return body
}

// ---------------------------------------------------------------------------------------------------
// 0.24.2 changes a host's runtime (maintenance mode, connection, power) and a cluster's host list without
// telling the property collector, so WaitForUpdatesEx never reports them. A real vCenter does; this
// publishes such changes shortly after they happen.

type hostRuntime struct {
	maintenance bool
	connection  types.HostSystemConnectionState
	power       types.HostSystemPowerState
}

type runtimePublisher struct {
	seen         map[types.ManagedObjectReference]hostRuntime
	clusterHosts map[types.ManagedObjectReference]int
}

func newRuntimePublisher() *runtimePublisher {
	p := &runtimePublisher{map[types.ManagedObjectReference]hostRuntime{}, map[types.ManagedObjectReference]int{}}
	p.check() // the state before anyone can connect is the baseline
	return p
}

func (p *runtimePublisher) run(every time.Duration) {
	for range time.Tick(every) {
		p.check()
	}
}

// check publishes what changed since the last check; an object seen for the first time only sets its
// baseline (its creation was already announced).
func (p *runtimePublisher) check() {
	for _, e := range simulator.Map.All("HostSystem") {
		host, ok := e.(*simulator.HostSystem)
		if !ok {
			continue
		}
		simulator.Map.WithLock(host, func() {
			now := hostRuntime{host.Runtime.InMaintenanceMode, host.Runtime.ConnectionState, host.Runtime.PowerState}
			before, known := p.seen[host.Self]
			p.seen[host.Self] = now
			if !known || before == now {
				return
			}
			simulator.Map.Update(host, []types.PropertyChange{
				{Name: "runtime.inMaintenanceMode", Val: now.maintenance},
				{Name: "runtime.connectionState", Val: now.connection},
				{Name: "runtime.powerState", Val: now.power},
			})
		})
	}
	for _, e := range simulator.Map.All("ClusterComputeResource") {
		cluster, ok := e.(*simulator.ClusterComputeResource)
		if !ok {
			continue
		}
		simulator.Map.WithLock(cluster, func() {
			n := len(cluster.Host)
			before, known := p.clusterHosts[cluster.Self]
			p.clusterHosts[cluster.Self] = n
			if known && before != n {
				hosts := append([]types.ManagedObjectReference(nil), cluster.Host...)
				simulator.Map.Update(cluster, []types.PropertyChange{{Name: "host", Val: hosts}})
			}
		})
	}
}

// ---------------------------------------------------------------------------------------------------
// DV ports (netsync): ReconfigureDVPort_Task, and a FetchDVPorts that honours criteria.portKey and returns
// each port's own settings and connectee. 0.24.2 has no ReconfigureDVPort_Task, and its FetchDVPorts
// returns every port group's default setting under per-port-group keys. The simulator's switch type can
// neither get new methods from here nor be replaced (other simulator code type-asserts it), so the front
// routes these two calls to a dvPorts object per switch, registered under the moref type "AgentvmDVPorts".

const dvPortsType = "AgentvmDVPorts"

var reDVPortCall = regexp.MustCompile(
	`(?s)(<(?:ReconfigureDVPort_Task|FetchDVPorts)\b[^>]*>\s*<_this\b[^>]*?type=")([^"]*)("[^>]*>)([^<]*)(</_this>)`)

type dvPorts struct {
	self     types.ManagedObjectReference
	dvs      types.ManagedObjectReference
	vlans    map[string]types.BaseVmwareDistributedVirtualSwitchVlanSpec // port key -> its own VLAN
	versions map[string]int
}

func (p *dvPorts) Reference() types.ManagedObjectReference { return p.self }

var dvPortsMu sync.Mutex

// routeDVPortCalls rewrites the _this of ReconfigureDVPort_Task / FetchDVPorts to the switch's dvPorts;
// it returns the body and the switch's own type ("" when nothing was routed).
func routeDVPortCalls(body []byte) ([]byte, string) {
	m := reDVPortCall.FindSubmatchIndex(body)
	if m == nil {
		return body, ""
	}
	kind, moid := string(body[m[4]:m[5]]), string(body[m[8]:m[9]])
	dvs := types.ManagedObjectReference{Type: kind, Value: moid}
	if _, ok := simulator.Map.Get(dvs).(*simulator.DistributedVirtualSwitch); !ok {
		return body, "" // not a switch: let the simulator answer ManagedObjectNotFound
	}
	self := types.ManagedObjectReference{Type: dvPortsType, Value: moid}
	dvPortsMu.Lock()
	if simulator.Map.Get(self) == nil {
		simulator.Map.Put(&dvPorts{self: self, dvs: dvs,
			vlans: map[string]types.BaseVmwareDistributedVirtualSwitchVlanSpec{}, versions: map[string]int{}})
	}
	dvPortsMu.Unlock()
	var b bytes.Buffer
	b.Write(body[:m[4]])
	b.WriteString(dvPortsType)
	b.Write(body[m[5]:])
	return b.Bytes(), kind
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
	kind string
	buf  bytes.Buffer
}

func (w *routedWriter) Write(b []byte) (int, error) { return w.buf.Write(b) }

func (w *routedWriter) flush() {
	body := bytes.ReplaceAll(w.buf.Bytes(), []byte(`type="`+dvPortsType+`"`), []byte(`type="`+w.kind+`"`))
	body = bytes.ReplaceAll(body, []byte(dvPortsType+":"), []byte(w.kind+":"))
	w.Header().Set("Content-Length", fmt.Sprint(len(body)))
	_, _ = w.ResponseWriter.Write(body)
}

// ---------------------------------------------------------------------------------------------------
// the HTTP front: extension certificate checks, host watch, /eam/sdk

var (
	reLoginExt  = regexp.MustCompile(`(?s)<LoginExtensionByCertificate\b.*?<extensionKey\b[^>]*>([^<]*)</extensionKey>`)
	reSetCert   = regexp.MustCompile(`(?s)<SetExtensionCertificate\b.*?</SetExtensionCertificate>`)
	reAddHost   = regexp.MustCompile(`<(AddHost_Task|AddStandaloneHost_Task)\b`)
	rePemInBody = regexp.MustCompile(`<certificatePem\b`)
)

type front struct {
	sim      http.Handler
	eam      http.Handler
	agentMgr *agentManagers
	hostWait time.Time
	mu       sync.Mutex
}

func peerThumbprint(r *http.Request) (string, []byte) {
	if r.TLS == nil || len(r.TLS.PeerCertificates) == 0 {
		return "", nil
	}
	der := r.TLS.PeerCertificates[0].Raw
	return thumbprint(der), der
}

// soapPanic answers a request whose handler panicked inside the 0.24.2 simulator (e.g. a Fetch of an
// object it cannot find) with a SystemError fault, instead of the dropped connection net/http gives.
func soapPanic(w http.ResponseWriter, cause interface{}) {
	msg := strings.NewReplacer("&", "&amp;", "<", "&lt;", ">", "&gt;").Replace(fmt.Sprint(cause))
	fmt.Fprintf(os.Stderr, "agentvm-vcsim: recovered from a simulator panic: %s\n", msg)
	w.Header().Set("Content-Type", "text/xml; charset=utf-8")
	w.WriteHeader(http.StatusInternalServerError)
	fmt.Fprintf(w, `<?xml version="1.0" encoding="UTF-8"?>
<soapenv:Envelope xmlns:soapenv="http://schemas.xmlsoap.org/soap/envelope/" `+
		`xmlns:xsd="http://www.w3.org/2001/XMLSchema" xmlns:xsi="http://www.w3.org/2001/XMLSchema-instance">`+
		`<soapenv:Body><soapenv:Fault><faultcode>ServerFaultCode</faultcode><faultstring>simulator error: %s</faultstring>`+
		`<detail><SystemErrorFault xmlns="urn:vim25" xsi:type="SystemError"><reason>%s</reason></SystemErrorFault>`+
		`</detail></soapenv:Fault></soapenv:Body></soapenv:Envelope>`, msg, msg)
}

func (f *front) ServeHTTP(w http.ResponseWriter, r *http.Request) {
	defer func() {
		if cause := recover(); cause != nil {
			soapPanic(w, cause)
		}
	}()
	if strings.HasPrefix(r.URL.Path, "/eam/") || r.URL.Path == "/eam" {
		f.eam.ServeHTTP(w, r)
		return
	}
	if r.Method != http.MethodPost || !strings.HasPrefix(r.URL.Path, "/sdk") {
		f.sim.ServeHTTP(w, r)
		return
	}
	body, err := io.ReadAll(r.Body)
	if err != nil {
		w.WriteHeader(http.StatusBadRequest)
		return
	}
	if m := reLoginExt.FindSubmatchIndex(body); m != nil {
		key := string(body[m[2]:m[3]])
		tp, _ := peerThumbprint(r)
		want, ok := certs.get(key)
		if tp != "" && (!ok || want != tp) {
			// Not the certificate registered for this extension: blank the key, which the
			// simulator answers with InvalidLogin, the fault a real vCenter gives.
			body = append(append([]byte{}, body[:m[2]]...), body[m[3]:]...)
		}
	}
	if loc := reSetCert.FindIndex(body); loc != nil && !rePemInBody.Match(body[loc[0]:loc[1]]) {
		if _, der := peerThumbprint(r); der != nil {
			p := pem.EncodeToMemory(&pem.Block{Type: "CERTIFICATE", Bytes: der})
			end := loc[1] - len("</SetExtensionCertificate>")
			var b bytes.Buffer
			b.Write(body[:end])
			b.WriteString("<certificatePem>")
			b.Write(p)
			b.WriteString("</certificatePem>")
			b.Write(body[end:])
			body = b.Bytes()
		}
	}
	if reAddHost.Match(body) {
		f.mu.Lock()
		f.hostWait = time.Now().Add(30 * time.Second)
		f.mu.Unlock()
	}
	f.mu.Lock()
	scan := time.Now().Before(f.hostWait)
	f.mu.Unlock()
	if scan {
		// a host added by a task is given its agent manager before anyone can read it
		f.agentMgr.ensure()
	}
	routed, kind := routeDVPortCalls(body)
	r.Body = io.NopCloser(bytes.NewReader(routed))
	r.ContentLength = int64(len(routed))
	if kind == "" {
		f.sim.ServeHTTP(w, r)
		return
	}
	rw := &routedWriter{ResponseWriter: w, kind: kind}
	f.sim.ServeHTTP(rw, r)
	rw.flush()
}

func eamProxy(backend string) http.Handler {
	if backend == "" {
		return http.HandlerFunc(func(w http.ResponseWriter, _ *http.Request) {
			http.Error(w, "no EAM backend: start the lab's EAM emulator (agentvm lab up)", http.StatusServiceUnavailable)
		})
	}
	u, err := url.Parse(backend)
	if err != nil || u.Host == "" {
		fail(exitUsage, "--eam-backend %q is not a URL like http://127.0.0.1:PORT", backend)
	}
	if !isLoopback(u.Hostname()) {
		fail(exitUsage, "--eam-backend must be on loopback (127.0.0.1), got %q", u.Host)
	}
	p := httputil.NewSingleHostReverseProxy(u)
	p.ErrorHandler = func(w http.ResponseWriter, _ *http.Request, err error) {
		http.Error(w, "EAM backend unreachable: "+err.Error(), http.StatusBadGateway)
	}
	return p
}

func isLoopback(host string) bool {
	if host == "localhost" {
		return true
	}
	ip := net.ParseIP(host)
	return ip != nil && ip.IsLoopback()
}

// ---------------------------------------------------------------------------------------------------
// workload VMs: --vms per host

func addVMs(ctx context.Context, c *vim25.Client, perHost int) error {
	if perHost == 0 {
		return nil
	}
	vmgr := view.NewManager(c)
	for _, e := range simulator.Map.All("Datacenter") {
		dc := object.NewDatacenter(c, e.Reference())
		folders, err := dc.Folders(ctx)
		if err != nil {
			return err
		}
		v, err := vmgr.CreateContainerView(ctx, dc.Reference(), []string{"HostSystem"}, true)
		if err != nil {
			return err
		}
		var hosts []mo.HostSystem
		err = v.Retrieve(ctx, []string{"HostSystem"}, []string{"name", "network", "datastore"}, &hosts)
		_ = v.Destroy(ctx)
		if err != nil {
			return err
		}
		for _, h := range hosts {
			host := object.NewHostSystem(c, h.Self)
			pool, err := host.ResourcePool(ctx)
			if err != nil {
				return err
			}
			nic := esx.EthernetCard
			for _, n := range h.Network {
				if n.Type == "Network" {
					nic.Backing = &types.VirtualEthernetCardNetworkBackingInfo{
						VirtualDeviceDeviceBackingInfo: types.VirtualDeviceDeviceBackingInfo{DeviceName: "VM Network"},
						Network:                        types.NewReference(n),
					}
					break
				}
			}
			ds := simulator.Map.Get(h.Datastore[0]).(*simulator.Datastore)
			for i := 0; i < perHost; i++ {
				name := fmt.Sprintf("%s_VM%d", h.Name, i)
				card := nic
				spec := types.VirtualMachineConfigSpec{
					Name:    name,
					GuestId: string(types.VirtualMachineGuestOsIdentifierOtherGuest),
					Files:   &types.VirtualMachineFileInfo{VmPathName: "[" + ds.Name + "]"},
					DeviceChange: []types.BaseVirtualDeviceConfigSpec{
						&types.VirtualDeviceConfigSpec{Operation: types.VirtualDeviceConfigSpecOperationAdd, Device: &card},
					},
				}
				task, err := folders.VmFolder.CreateVM(ctx, spec, pool, host)
				if err != nil {
					return err
				}
				info, err := task.WaitForResult(ctx, nil)
				if err != nil {
					return fmt.Errorf("create %s: %w", name, err)
				}
				vm := object.NewVirtualMachine(c, info.Result.(types.ManagedObjectReference))
				if t, err := vm.PowerOn(ctx); err == nil {
					_ = t.Wait(ctx)
				}
			}
		}
	}
	return nil
}

// ---------------------------------------------------------------------------------------------------

var uuidPattern = regexp.MustCompile(`^[0-9a-fA-F]{8}-[0-9a-fA-F]{4}-[0-9a-fA-F]{4}-[0-9a-fA-F]{4}-[0-9a-fA-F]{12}$`)

type readyInfo struct {
	URL              string  `json:"url"`
	Username         string  `json:"username"`
	Password         string  `json:"password"`
	Thumbprint       string  `json:"thumbprint,omitempty"`
	ThumbprintSHA256 string  `json:"thumbprint_sha256,omitempty"`
	CertificatePEM   string  `json:"certificate_pem,omitempty"`
	EAMURL           string  `json:"eam_url"`
	InstanceUUID     string  `json:"instance_uuid"`
	PID              int     `json:"pid"`
	Datacenters      int     `json:"datacenters"`
	Clusters         int     `json:"clusters"`
	Hosts            int     `json:"hosts"`
	Standalone       int     `json:"standalone"`
	VMs              int     `json:"vms"`
	DVS              bool    `json:"dvs"`
	StartSeconds     float64 `json:"start_seconds"`
}

func main() {
	start := time.Now()
	listen := flag.String("listen", "127.0.0.1:0", "address to listen on (loopback only); port 0 = any free port")
	dcs := flag.Int("datacenters", 1, "datacenters")
	clusters := flag.Int("clusters", 2, "clusters per datacenter")
	hosts := flag.Int("hosts", 3, "hosts per cluster")
	standalone := flag.Int("standalone", 0, "standalone hosts per datacenter")
	vms := flag.Int("vms", 0, "workload VMs per host")
	dvs := flag.Bool("dvs", true, "a distributed virtual switch (with one port group) per datacenter")
	plain := flag.Bool("plain-http", false, "serve plain HTTP instead of HTTPS")
	user := flag.String("username", "administrator@vsphere.local", "the one user that may log in")
	eamBackend := flag.String("eam-backend", "", "URL the /eam/sdk route is forwarded to (the EAM emulator)")
	infoFile := flag.String("info-file", "", "also write the ready JSON to this file")
	instanceUUID := flag.String("instance-uuid", "",
		"about.instanceUuid of this world (default: vcsim's own, the same in every simulator)")
	exitWithParent := flag.Bool("exit-with-parent", true, "stop when the process that started us is gone")
	flag.Parse()

	for name, v := range map[string]int{"--datacenters": *dcs, "--clusters": *clusters, "--hosts": *hosts,
		"--standalone": *standalone, "--vms": *vms} {
		if v < 0 {
			fail(exitUsage, "%s must be 0 or more (got %d)", name, v)
		}
	}
	if *dcs < 1 {
		fail(exitUsage, "--datacenters must be 1 or more (got %d)", *dcs)
	}
	if *instanceUUID != "" && !uuidPattern.MatchString(*instanceUUID) {
		fail(exitUsage, "--instance-uuid must be a UUID like 8d8f5c1e-0b7a-4d2e-9c3f-1a2b3c4d5e6f (got %q)",
			*instanceUUID)
	}
	password := os.Getenv("AGENTVM_VCSIM_PASSWORD")
	if password == "" {
		b := make([]byte, 12)
		_, _ = rand.Read(b)
		password = hex.EncodeToString(b)
	}
	host, _, err := net.SplitHostPort(*listen)
	if err != nil || !isLoopback(host) {
		fail(exitUsage, "--listen must be a loopback address like 127.0.0.1:0 (got %q)", *listen)
	}
	// Fail with a clear message if the port is taken (the simulator itself would panic).
	probe, err := net.Listen("tcp", *listen)
	if err != nil {
		fail(exitListen, "cannot listen on %s: %v; choose another port, or 0 for any free one", *listen, err)
	}
	_ = probe.Close()

	m := simulator.VPX()
	m.Datacenter = *dcs
	m.Cluster = *clusters
	m.ClusterHost = *hosts
	m.Host = *standalone
	m.Machine = 0
	m.Autostart = false
	m.Portgroup = 0
	if *dvs {
		m.Portgroup = 1
	}
	if err := m.Create(); err != nil {
		fail(exitModel, "building the inventory: %v", err)
	}
	defer m.Remove()
	// A vCenter's about.instanceUuid names its installation (agentvm derives SDN ids from it); 0.24.2
	// assigns a random one to a copy of the content and serves a fixed one, so every simulator looks like
	// the same vCenter. The lab gives each world its own.
	si := simulator.Map.Get(vim25.ServiceInstance).(*simulator.ServiceInstance)
	if *instanceUUID != "" {
		si.Content.About.InstanceUuid = strings.ToLower(*instanceUUID)
	}
	markUplinks()

	m.Service.Listen = &url.URL{Host: *listen, User: url.UserPassword(*user, password)}
	var cert tls.Certificate
	if !*plain {
		cert, err = selfSigned()
		if err != nil {
			fail(exitModel, "making a TLS certificate: %v", err)
		}
		m.Service.TLS = &tls.Config{Certificates: []tls.Certificate{cert}, MinVersion: tls.VersionTLS12}
	}

	// Replace the inert ExtensionManager with ours, under the same reference.
	em := &ExtensionManager{}
	em.Self = *m.ServiceContent.ExtensionManager
	simulator.Map.Put(em)
	if pc, ok := simulator.Map.Get(m.ServiceContent.PropertyCollector).(*simulator.PropertyCollector); ok {
		simulator.Map.Put(&pagingCollector{PropertyCollector: *pc})
	}
	mgrs := &agentManagers{done: map[types.ManagedObjectReference]bool{}}
	mgrs.ensure()

	ctx := context.Background()
	c, err := vim25.NewClient(ctx, m.Service)
	if err != nil {
		fail(exitModel, "in-process client: %v", err)
	}
	if err := addVMs(ctx, c, *vms); err != nil {
		fail(exitModel, "creating workload VMs: %v", err)
	}

	publisher := newRuntimePublisher()
	go publisher.run(200 * time.Millisecond)

	srv := m.Service.NewServer()
	f := &front{sim: srv.Config.Handler, eam: eamProxy(*eamBackend), agentMgr: mgrs}
	// Nobody knows the port before the ready line below, so no request can race this assignment.
	srv.Config.Handler = f
	// Keep a host scan going for hosts added outside SOAP calls we see (defensive; cheap).
	go func() {
		for range time.Tick(time.Second) {
			mgrs.ensure()
		}
	}()

	u := *srv.URL
	u.User = nil
	info := readyInfo{
		URL: u.String(), Username: *user, Password: password, PID: os.Getpid(),
		Datacenters: *dcs, Clusters: *clusters, Hosts: *hosts, Standalone: *standalone, VMs: *vms, DVS: *dvs,
		InstanceUUID: si.Content.About.InstanceUuid,
	}
	eam := u
	eam.Path = "/eam/sdk"
	info.EAMURL = eam.String()
	if !*plain {
		der := cert.Certificate[0]
		info.Thumbprint = thumbprint(der)
		sum := sha256.Sum256(der)
		info.ThumbprintSHA256 = colonHex(sum[:])
		info.CertificatePEM = string(pem.EncodeToMemory(&pem.Block{Type: "CERTIFICATE", Bytes: der}))
	}
	info.StartSeconds = time.Since(start).Seconds()
	line, _ := json.Marshal(info)
	if *infoFile != "" {
		tmp := *infoFile + ".tmp"
		if err := os.WriteFile(tmp, line, 0o600); err == nil {
			_ = os.Rename(tmp, *infoFile)
		}
	}
	fmt.Println(string(line))

	sig := make(chan os.Signal, 1)
	signal.Notify(sig, syscall.SIGINT, syscall.SIGTERM)
	if *exitWithParent {
		// A parent killed without stopping us (kill -9 of a test run) must not leave a simulator behind.
		parent := os.Getppid()
		go func() {
			for range time.Tick(500 * time.Millisecond) {
				if os.Getppid() != parent {
					sig <- syscall.SIGTERM
					return
				}
			}
		}()
	}
	<-sig
	srv.Close()
}
