// SPDX-License-Identifier: MIT
// A vCenter emulator for the vsphere provider's tests: govmomi's simulator
// plus what it lacks (ExportVm with a real HttpNfcLease and NFC downloads,
// OvfManager.CreateDescriptor, paged RetrievePropertiesEx, session-checked
// datastore reads, QueryChangedDiskAreas), with fault switches and counters
// on a control port.
//
// Prints "URL <sdk url>", "PORT <n>", "CONTROL <n>", "DATASTORE <dir>" and
// "READY" on stdout, then serves until SIGTERM/SIGINT.
package main

import (
	"context"
	"crypto/tls"
	"flag"
	"fmt"
	"log"
	"net"
	"net/http"
	"net/url"
	"os"
	"os/signal"
	"syscall"

	"github.com/vmware/govmomi/simulator"
	"github.com/vmware/govmomi/vim25"
)

func main() {
	modelName := flag.String("model", "vpx", "inventory model: vpx or esx")
	listen := flag.String("listen", "127.0.0.1:0", "SOAP/HTTP listen address")
	control := flag.String("control", "127.0.0.1:0", "control endpoint listen address (plain HTTP)")
	certFile := flag.String("cert", "", "TLS certificate (PEM); serve HTTPS when set")
	keyFile := flag.String("key", "", "TLS private key (PEM)")
	workDir := flag.String("workdir", "", "folder for generated export streams (default: a temp dir)")
	leaseTimeout := flag.Int("lease-timeout", 300, "HttpNfcLease timeout in seconds without progress")
	pageSize := flag.Int("page-size", 2, "largest RetrievePropertiesEx page (0: no paging)")
	username := flag.String("username", "user", "the one account Login accepts")
	password := flag.String("password", "pass", "its password")
	cbtMiB := flag.Int64("cbt-mib", 4, "size of the powered-off VM with changed block tracking (MiB)")
	flag.Parse()
	log.SetOutput(os.Stderr)

	var model *simulator.Model
	switch *modelName {
	case "vpx":
		model = simulator.VPX()
		// Three VMs a host: the third ones have changed block tracking.
		model.Machine = 3
	case "esx":
		model = simulator.ESX()
	default:
		fatalf("unknown model %q", *modelName)
	}
	if err := model.Create(); err != nil {
		fatalf("create model: %v", err)
	}
	defer model.Remove()

	if *workDir == "" {
		dir, err := os.MkdirTemp("", "cfsvcsim-nfc-")
		if err != nil {
			fatalf("workdir: %v", err)
		}
		*workDir = dir
		defer os.RemoveAll(dir)
	}

	ctx := context.Background()
	client, err := vim25.NewClient(ctx, model.Service)
	if err != nil {
		fatalf("in-process client: %v", err)
	}

	emu := newEmulator(client, *workDir)
	emu.cbtMiB = *cbtMiB
	emu.defaults.LeaseTimeout = *leaseTimeout
	emu.defaults.PageSize = *pageSize
	emu.faults = emu.defaults
	if err := emu.shapeInventory(ctx); err != nil {
		fatalf("shape inventory: %v", err)
	}
	emu.registerObjects()

	// A Userinfo other than simulator.DefaultLogin makes Login check both.
	model.Service.Listen = &url.URL{Host: *listen, User: url.UserPassword(*username, *password)}
	if *certFile != "" {
		cert, err := tls.LoadX509KeyPair(*certFile, *keyFile)
		if err != nil {
			fatalf("load certificate: %v", err)
		}
		model.Service.TLS = &tls.Config{Certificates: []tls.Certificate{cert}}
	}
	server := model.Service.NewServer()
	defer server.Close()
	// The simulator's mux is complete now; put the front handler before it.
	// Nobody knows the port yet, so no request can race with this.
	emu.inner = server.Config.Handler
	server.Config.Handler = emu
	emu.scheme = server.URL.Scheme

	ctl, err := net.Listen("tcp", *control)
	if err != nil {
		fatalf("control listen: %v", err)
	}
	go func() { _ = http.Serve(ctl, emu.controlHandler()) }()

	sdk := *server.URL
	sdk.User = nil
	fmt.Printf("URL %s\n", sdk.String())
	fmt.Printf("PORT %s\n", sdk.Port())
	fmt.Printf("CONTROL %d\n", ctl.Addr().(*net.TCPAddr).Port)
	fmt.Printf("DATASTORE %s\n", emu.datastoreDir())
	fmt.Printf("READY\n")
	os.Stdout.Sync()

	sig := make(chan os.Signal, 1)
	signal.Notify(sig, syscall.SIGTERM, syscall.SIGINT)
	<-sig
	emu.shutdown()
}

func fatalf(format string, args ...interface{}) {
	fmt.Fprintf(os.Stderr, "vcsim: "+format+"\n", args...)
	os.Exit(1)
}
