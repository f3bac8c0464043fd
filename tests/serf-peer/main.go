// A HashiCorp serf member for berth's gossip tests, built from Go modules
// at serf 0.9.4 and memberlist 0.2.2 (go.mod; the versions Debian 12
// packages, whose wire protocol is the one the Go Portainer agent's serf
// 0.8 / memberlist 0.1 speak).
//
// It prints "READY" when it gossips, then answers commands read from stdin,
// one per line, each with one JSON line on stdout:
//
//	members            {"members":[{"name","addr","port","status","tags"}]}
//	tags k=v,k=v       {"ok":true}   (serf SetTags)
//	join host:port     {"ok":true,"joined":n} or {"error":"..."}
//	leave              {"ok":true}   (serf Leave, then shutdown)
//	events             {"events":[{"type","name"}]}   (member events so far,
//	                   in order: member-join, member-failed, member-leave, ...)
//
// With -capture FILE, every packet and stream it reads or writes is logged
// there as a JSON line {"dir","kind","hex"}, for berth's protocol fixtures.
package main

import (
	"bufio"
	"bytes"
	"encoding/base64"
	"encoding/hex"
	"encoding/json"
	"flag"
	"fmt"
	"io/ioutil"
	"log"
	"net"
	"os"
	"strconv"
	"strings"
	"sync"
	"time"

	"github.com/hashicorp/memberlist"
	"github.com/hashicorp/serf/serf"
)

type capture struct {
	mu  sync.Mutex
	out *os.File
}

func (c *capture) log(dir, kind string, data []byte) {
	if c == nil {
		return
	}
	c.mu.Lock()
	defer c.mu.Unlock()
	line, _ := json.Marshal(map[string]string{"dir": dir, "kind": kind, "hex": hex.EncodeToString(data)})
	c.out.Write(append(line, '\n'))
}

// capturingTransport logs what memberlist's own transport moves. It offers
// only the Transport interface every memberlist version has (0.1.4 has no
// node-aware transport; later ones wrap a plain Transport in a shim that
// calls WriteTo and DialTimeout), so one source builds against each.
type capturingTransport struct {
	inner   *memberlist.NetTransport
	capture *capture
	packets chan *memberlist.Packet
	streams chan net.Conn
}

func (t *capturingTransport) FinalAdvertiseAddr(ip string, port int) (net.IP, int, error) {
	return t.inner.FinalAdvertiseAddr(ip, port)
}

func (t *capturingTransport) Shutdown() error { return t.inner.Shutdown() }

func (t *capturingTransport) WriteTo(b []byte, addr string) (time.Time, error) {
	t.capture.log("out", "packet", b)
	return t.inner.WriteTo(b, addr)
}

func (t *capturingTransport) PacketCh() <-chan *memberlist.Packet { return t.packets }
func (t *capturingTransport) StreamCh() <-chan net.Conn           { return t.streams }

func (t *capturingTransport) DialTimeout(addr string, timeout time.Duration) (net.Conn, error) {
	conn, err := t.inner.DialTimeout(addr, timeout)
	if err != nil {
		return nil, err
	}
	return &teeConn{Conn: conn, capture: t.capture}, nil
}

func (t *capturingTransport) pump() {
	go func() {
		for p := range t.inner.PacketCh() {
			t.capture.log("in", "packet", p.Buf)
			t.packets <- p
		}
	}()
	go func() {
		for c := range t.inner.StreamCh() {
			t.streams <- &teeConn{Conn: c, capture: t.capture}
		}
	}()
}

// teeConn logs a stream's bytes each way when it closes.
type teeConn struct {
	net.Conn
	capture  *capture
	in, out  bytes.Buffer
	closeOne sync.Once
}

func (c *teeConn) Read(p []byte) (int, error) {
	n, err := c.Conn.Read(p)
	c.in.Write(p[:n])
	return n, err
}

func (c *teeConn) Write(p []byte) (int, error) {
	c.out.Write(p)
	return c.Conn.Write(p)
}

func (c *teeConn) Close() error {
	c.closeOne.Do(func() {
		c.capture.log("in", "stream", c.in.Bytes())
		c.capture.log("out", "stream", c.out.Bytes())
	})
	return c.Conn.Close()
}

func parseTags(text string) map[string]string {
	tags := map[string]string{}
	for _, pair := range strings.Split(text, ",") {
		if kv := strings.SplitN(pair, "=", 2); len(kv) == 2 {
			tags[kv[0]] = kv[1]
		}
	}
	return tags
}

func reply(v interface{}) {
	line, _ := json.Marshal(v)
	fmt.Println(string(line))
}

func main() {
	name := flag.String("name", "go-peer", "serf node name")
	bind := flag.String("bind", "127.0.0.1:7946", "gossip address (TCP and UDP)")
	join := flag.String("join", "", "comma-separated addresses to join")
	tags := flag.String("tags", "", "k=v,k=v")
	key := flag.String("key", "", "base64 gossip key, as serf -encrypt")
	probeInterval := flag.Duration("probe-interval", time.Second, "memberlist ProbeInterval")
	probeTimeout := flag.Duration("probe-timeout", 500*time.Millisecond, "memberlist ProbeTimeout")
	captureFile := flag.String("capture", "", "file to log packets and streams to")
	verbose := flag.Bool("v", false, "serf and memberlist logs on stderr")
	flag.Parse()

	host, portText, err := net.SplitHostPort(*bind)
	if err != nil {
		log.Fatal(err)
	}
	port, _ := strconv.Atoi(portText)

	config := serf.DefaultConfig()
	config.NodeName = *name
	config.Tags = parseTags(*tags)
	config.ReconnectInterval = 10 * time.Second
	config.ReconnectTimeout = time.Minute
	ml := memberlist.DefaultLANConfig()
	ml.BindAddr = host
	ml.BindPort = port
	ml.AdvertiseAddr = host
	ml.AdvertisePort = port
	ml.ProbeInterval = *probeInterval
	ml.ProbeTimeout = *probeTimeout
	ml.GossipInterval = 200 * time.Millisecond
	if *key != "" {
		raw, err := base64.StdEncoding.DecodeString(*key)
		if err != nil {
			log.Fatal(err)
		}
		ml.SecretKey = raw
	}
	logs := ioutil.Discard
	if *verbose {
		logs = os.Stderr
	}
	config.LogOutput = logs
	ml.LogOutput = logs
	if *captureFile != "" {
		out, err := os.Create(*captureFile)
		if err != nil {
			log.Fatal(err)
		}
		inner, err := memberlist.NewNetTransport(&memberlist.NetTransportConfig{
			BindAddrs: []string{host}, BindPort: port, Logger: log.New(logs, "", log.LstdFlags),
		})
		if err != nil {
			log.Fatal(err)
		}
		t := &capturingTransport{inner: inner, capture: &capture{out: out},
			packets: make(chan *memberlist.Packet), streams: make(chan net.Conn)}
		t.pump()
		ml.Transport = t
	}
	config.MemberlistConfig = ml
	// Member events, kept for the "events" command: a clean leave is a
	// member-leave alone, a leave heard as a death a member-failed first.
	var eventsMu sync.Mutex
	events := []map[string]string{}
	eventCh := make(chan serf.Event, 256)
	config.EventCh = eventCh
	go func() {
		for e := range eventCh {
			if me, ok := e.(serf.MemberEvent); ok {
				eventsMu.Lock()
				for _, m := range me.Members {
					events = append(events, map[string]string{"type": me.EventType().String(), "name": m.Name})
				}
				eventsMu.Unlock()
			}
		}
	}()

	s, err := serf.Create(config)
	if err != nil {
		log.Fatal(err)
	}
	if *join != "" {
		if _, err := s.Join(strings.Split(*join, ","), false); err != nil {
			log.Printf("join: %v", err)
		}
	}
	fmt.Println("READY")

	input := bufio.NewScanner(os.Stdin)
	for input.Scan() {
		fields := strings.SplitN(strings.TrimSpace(input.Text()), " ", 2)
		arg := ""
		if len(fields) == 2 {
			arg = fields[1]
		}
		switch fields[0] {
		case "members":
			list := []map[string]interface{}{}
			for _, m := range s.Members() {
				list = append(list, map[string]interface{}{
					"name": m.Name, "addr": m.Addr.String(), "port": m.Port,
					"status": m.Status.String(), "tags": m.Tags,
				})
			}
			reply(map[string]interface{}{"members": list})
		case "events":
			eventsMu.Lock()
			reply(map[string]interface{}{"events": events})
			eventsMu.Unlock()
		case "tags":
			if err := s.SetTags(parseTags(arg)); err != nil {
				reply(map[string]string{"error": err.Error()})
			} else {
				reply(map[string]bool{"ok": true})
			}
		case "join":
			n, err := s.Join([]string{arg}, false)
			if err != nil {
				reply(map[string]string{"error": err.Error()})
			} else {
				reply(map[string]interface{}{"ok": true, "joined": n})
			}
		case "leave":
			err := s.Leave()
			s.Shutdown()
			if err != nil {
				reply(map[string]string{"error": err.Error()})
			} else {
				reply(map[string]bool{"ok": true})
			}
		default:
			reply(map[string]string{"error": "unknown command"})
		}
	}
}
