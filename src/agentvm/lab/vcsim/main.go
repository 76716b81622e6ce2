// agentvm-vcsim: VMware's vCenter simulator (govmomi 0.24.2, from Debian) with what agentvm's lab needs
// and 0.24.2 lacks:
//
//   - ExtensionManager: Register/Unregister/Find/UpdateExtension, SetExtensionCertificate, extensionList.
//   - HostEsxAgentHostManager on every host (configManager.esxAgentHostManager, configInfo,
//     EsxAgentHostManagerUpdateConfig), mirrored in summary.config.agentVmDatastore/agentVmNetwork.
//   - LoginExtensionByCertificate checked against the certificate set with SetExtensionCertificate.
//   - RetrievePropertiesEx paging (maxObjects, Continue/Cancel) and a WaitForUpdatesEx that stays cheap
//     on a large inventory; host runtime and cluster membership changes told to the property collector.
//   - DV ports (ReconfigureDVPort_Task, FetchDVPorts by port key) and marked uplink port groups.
//   - Physical NICs on every host (--pnics, --host-pnics) and a HostNetworkSystem that changes the host's
//     own config.network (vSwitch uplinks, per-host port groups, faults as ESXi gives them), one Network
//     per port group name per datacenter shared by the hosts that have it.
//   - Distributed switch membership (ReconfigureDvs_Task spec.host: config.host, summary.hostMember, the
//     hosts' proxySwitch, configVersion checked and bumped), CreateDVPortgroup_Task, and a
//     ReconfigureDVPortgroup_Task that merges the spec and checks configVersion.
//   - SetField replacing a custom value (not adding a second one), told to the property collector.
//   - Latency injection (--delay, --method-delay), so benchmarks can model a real vCenter.
//   - --esx: one standalone ESXi host agent instead (esx.go: 0.24.2's ESX model, the host's own name,
//     hardware UUID and physical NICs; autostart.go: HostAutoStartManager; maintenance.go: PowerOn refused
//     in maintenance mode; vapp.go: vApp options set by ReconfigVM_Task, and an edited device kept in its
//     place in config.hardware.device; file_tasks.go: FileManager
//     tasks whose info.entity is the datacenter), with none of the vCenter
//     additions above. --certificate keeps the TLS certificate in a file, so a restarted host keeps its
//     thumbprint.
//   - /eam/sdk forwarded to an EAM backend (agentvm's EAM emulator), so vim25 and EAM share one
//     endpoint and one session cookie, as on a real vCenter. The backend learns who a cookie belongs
//     to by reading sessionManager.currentSession with that cookie.
//
// It listens on loopback only and prints one JSON line when ready:
//
//	{"url": "https://127.0.0.1:PORT/sdk", "username": ..., "password": ..., "thumbprint": ...,
//	 "instance_uuid": ..., "api_type": "VirtualCenter" or "HostAgent", "host_name": ..., "host_uuid": ..., ...}
//
// One file per concern: main.go (flags, start-up, the ready line), world.go (what is added to 0.24.2's
// model), front.go (the HTTP front: routing, panics), eam.go (the /eam/sdk proxy), certificates.go (TLS
// certificates, thumbprints), extension_manager.go, session.go (certificate login),
// agent_host_manager.go, host_network.go (physical NICs, HostNetworkSystem), dvs_members.go (host
// membership of distributed switches, DV port groups), custom_fields.go, paging.go, batching.go (WaitForUpdatesEx), runtime.go (host runtime changes),
// dvports.go, delay.go, workload.go (--vms). The *_test.go files test them with 0.24.2's own simulator
// helpers (`python -m agentvm.lab.vcsim --check` runs gofmt -l, go vet and go test).
//
// Built by `agentvm lab build` with GO111MODULE=off GOPATH=/usr/share/gocode.
package main

import (
	"context"
	"crypto/rand"
	"crypto/sha256"
	"crypto/tls"
	"encoding/hex"
	"encoding/json"
	"encoding/pem"
	"flag"
	"fmt"
	"net"
	"net/url"
	"os"
	"os/signal"
	"regexp"
	"strings"
	"syscall"
	"time"

	"github.com/vmware/govmomi/simulator"
	"github.com/vmware/govmomi/vim25"
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

var reHostName = regexp.MustCompile(`^[A-Za-z0-9]([A-Za-z0-9-]{0,62})(\.[A-Za-z0-9]([A-Za-z0-9-]{0,62}))*$`)

// newUUID is a random (version 4) UUID.
func newUUID() string {
	b := make([]byte, 16)
	_, _ = rand.Read(b)
	b[6] = b[6]&0x0f | 0x40
	b[8] = b[8]&0x3f | 0x80
	h := hex.EncodeToString(b)
	return h[:8] + "-" + h[8:12] + "-" + h[12:16] + "-" + h[16:20] + "-" + h[20:]
}

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
	Pnics            int     `json:"pnics"`
	StartSeconds     float64 `json:"start_seconds"`
	APIType          string  `json:"api_type"`            // about.apiType: VirtualCenter, or HostAgent (--esx)
	HostName         string  `json:"host_name,omitempty"` // --esx: the host's name
	HostUUID         string  `json:"host_uuid,omitempty"` // --esx: its hardware.systemInfo.uuid
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
	delay := flag.Int("delay", 0, "milliseconds added to every SOAP call, to model a real vCenter's latency")
	pnics := flag.Int("pnics", 3, "physical NICs per host (vmnic0..vmnicN-1); vSwitch0 is bound to vmnic0")
	var hostPnics hostPnicsFlag
	flag.Var(&hostPnics, "host-pnics",
		"give one host only the NICs listed, like DC0_C0_H0=vmnic0 or DC0_C0_H0=vmnic0,vmnic1 (repeatable)")
	esxMode := flag.Bool("esx", false,
		"be one standalone ESXi host agent (about.apiType HostAgent) instead of a vCenter; the inventory flags are ignored")
	esxName := flag.String("esx-name", "esx-01", "--esx: the host's name")
	hostUUID := flag.String("host-uuid", "", "--esx: the host's hardware UUID (default: a random one)")
	certFile := flag.String("certificate", "",
		"PEM file with the TLS certificate and key: used when it exists, else a new one is made and kept there")
	methodDelay := flag.String("method-delay", "",
		"milliseconds added to given SOAP methods (on top of --delay), like RetrievePropertiesEx:50,WaitForUpdatesEx:10")
	flag.Parse()
	if *esxMode {
		userSet := false
		flag.Visit(func(f *flag.Flag) { userSet = userSet || f.Name == "username" })
		if !userSet {
			*user = "root" // a host's own administrator
		}
	}

	for name, v := range map[string]int{"--datacenters": *dcs, "--clusters": *clusters, "--hosts": *hosts,
		"--standalone": *standalone, "--vms": *vms, "--pnics": *pnics} {
		if v < 0 {
			fail(exitUsage, "%s must be 0 or more (got %d)", name, v)
		}
	}
	if *delay < 0 {
		fail(exitUsage, "--delay must be 0 or more milliseconds (got %d)", *delay)
	}
	perMethod, err := parseMethodDelay(*methodDelay)
	if err != nil {
		fail(exitUsage, "%v", err)
	}
	perHost, err := parseHostPnics(hostPnics)
	if err != nil {
		fail(exitUsage, "%v", err)
	}
	pnicPlan = nicPlan{count: *pnics, hosts: perHost}
	if *dcs < 1 {
		fail(exitUsage, "--datacenters must be 1 or more (got %d)", *dcs)
	}
	if *hostUUID != "" && !uuidPattern.MatchString(*hostUUID) {
		fail(exitUsage, "--host-uuid must be a UUID like 8d8f5c1e-0b7a-4d2e-9c3f-1a2b3c4d5e6f (got %q)", *hostUUID)
	}
	if *esxMode && !reHostName.MatchString(*esxName) {
		fail(exitUsage, "--esx-name must be a host name like esx-01 or esx-01.lab (got %q)", *esxName)
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

	var m *simulator.Model
	var mgrs *agentManagers
	var esxHostSystem *simulator.HostSystem
	if *esxMode {
		m = simulator.ESX()
		m.Machine = 0
		m.Autostart = false
		if err := m.Create(); err != nil {
			fail(exitModel, "building the host: %v", err)
		}
		if *hostUUID == "" {
			*hostUUID = newUUID()
		}
		esxHostSystem = extendESX(m, *esxName, *hostUUID)
		if missing := unknownHosts(perHost); len(missing) > 0 {
			fail(exitUsage, "--host-pnics names no host of this inventory: %s (the host is named %s)",
				strings.Join(missing, ", "), *esxName)
		}
	} else {
		m = simulator.VPX()
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
		mgrs = extend(m, *instanceUUID)
		if missing := unknownHosts(perHost); len(missing) > 0 {
			fail(exitUsage, "--host-pnics names no host of this inventory: %s (hosts are named like DC0_C0_H0)",
				strings.Join(missing, ", "))
		}
	}
	defer m.Remove()

	m.Service.Listen = &url.URL{Host: *listen, User: url.UserPassword(*user, password)}
	var cert tls.Certificate
	if !*plain {
		if *certFile != "" {
			cert, err = certificateFile(*certFile)
		} else {
			cert, err = selfSigned()
		}
		if err != nil {
			fail(exitModel, "making a TLS certificate: %v", err)
		}
		m.Service.TLS = &tls.Config{Certificates: []tls.Certificate{cert}, MinVersion: tls.VersionTLS12}
	}

	ctx := context.Background()
	c, err := vim25.NewClient(ctx, m.Service)
	if err != nil {
		fail(exitModel, "in-process client: %v", err)
	}
	if err := addVMs(ctx, c, *vms); err != nil {
		fail(exitModel, "creating workload VMs: %v", err)
	}

	setDelay(m, *delay, perMethod)

	publisher := newRuntimePublisher()
	go publisher.run(200 * time.Millisecond)

	// Nobody knows the port before the ready line below, so no request can race the front's assignment.
	var srv *simulator.Server
	if *esxMode {
		srv = serveESX(m)
	} else {
		srv = serve(m, eamProxy(*eamBackend), mgrs)
		// Keep a host scan going for hosts added outside SOAP calls we see (defensive; cheap).
		go func() {
			for range time.Tick(time.Second) {
				mgrs.ensure()
			}
		}()
	}

	u := *srv.URL
	u.User = nil
	info := readyInfo{
		URL: u.String(), Username: *user, Password: password, PID: os.Getpid(),
		Datacenters: *dcs, Clusters: *clusters, Hosts: *hosts, Standalone: *standalone, VMs: *vms, DVS: *dvs, Pnics: *pnics,
		InstanceUUID: simulator.Map.Get(vim25.ServiceInstance).(*simulator.ServiceInstance).Content.About.InstanceUuid,
	}
	info.APIType = simulator.Map.Get(vim25.ServiceInstance).(*simulator.ServiceInstance).Content.About.ApiType
	if *esxMode {
		info.Datacenters, info.Clusters, info.Hosts, info.Standalone, info.DVS = 1, 0, 0, 1, false
		info.HostName = esxHostSystem.Name
		info.HostUUID = esxHostSystem.Summary.Hardware.Uuid
	} else {
		eam := u
		eam.Path = "/eam/sdk"
		info.EAMURL = eam.String()
	}
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
