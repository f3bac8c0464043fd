// An imitation of chisel's tunnel server for what the real chisel cannot be
// made to do in berth's tests (re-keying after a set number of bytes, a
// hostile server asking for another target), written against
// golang.org/x/crypto/ssh (the SSH library chisel itself uses) and gorilla
// websocket at the versions chisel 1.11.3 builds with (go.mod). It behaves
// as chisel's server does on the wire: websocket subprotocol chisel-v3
// asked of the client but not echoed in the 101 (as chisel), server version
// SSH-chisel-v3-server, an ECDSA P-256 host key, password authentication,
// a "config" global request naming reverse remotes, and "chisel" channels
// opened towards the client for each connection to a remote's port.
//
// It reports on stdout, one event per line.
package main

import (
	"crypto/aes"
	"crypto/cipher"
	"crypto/ecdsa"
	"crypto/elliptic"
	"crypto/md5"
	"crypto/rand"
	"crypto/sha256"
	"encoding/base64"
	"encoding/hex"
	"encoding/json"
	"flag"
	"fmt"
	"io"
	"net"
	"net/http"
	"strings"
	"sync"
	"time"

	"github.com/gorilla/websocket"
	"golang.org/x/crypto/ssh"
)

var out sync.Mutex

// divert, when set, replaces the target of every channel: a hostile server.
var divert string

func say(format string, args ...interface{}) {
	out.Lock()
	defer out.Unlock()
	fmt.Printf(format+"\n", args...)
}

type remote struct {
	LocalHost, LocalPort, LocalProto    string
	RemoteHost, RemotePort, RemoteProto string
	Socks, Reverse, Stdio               bool
}

type config struct {
	Version string
	Remotes []remote
}

// wsConn makes a websocket's binary messages one byte stream.
type wsConn struct {
	*websocket.Conn
	reader io.Reader
}

func (c *wsConn) Read(p []byte) (int, error) {
	for {
		if c.reader == nil {
			kind, r, err := c.NextReader()
			if err != nil {
				return 0, err
			}
			if kind != websocket.BinaryMessage {
				continue
			}
			c.reader = r
		}
		n, err := c.reader.Read(p)
		if err == io.EOF {
			c.reader = nil
			if n > 0 {
				return n, nil
			}
			continue
		}
		return n, err
	}
}

func (c *wsConn) Write(p []byte) (int, error) {
	if err := c.WriteMessage(websocket.BinaryMessage, p); err != nil {
		return 0, err
	}
	return len(p), nil
}

func (c *wsConn) SetDeadline(t time.Time) error { return nil }

type server struct {
	ssh *ssh.ServerConfig
}

func (s *server) ServeHTTP(w http.ResponseWriter, r *http.Request) {
	// chisel's Upgrader names no Subprotocols, so its 101 has no echo.
	upgrader := websocket.Upgrader{}
	if r.Header.Get("Sec-WebSocket-Protocol") != "chisel-v3" {
		say("BADPROTOCOL %q", r.Header.Get("Sec-WebSocket-Protocol"))
		http.Error(w, "not chisel-v3", http.StatusBadRequest)
		return
	}
	ws, err := upgrader.Upgrade(w, r, nil)
	if err != nil {
		return
	}
	conn, channels, requests, err := ssh.NewServerConn(&wsConn{Conn: ws}, s.ssh)
	if err != nil {
		say("HANDSHAKEFAIL %v", err)
		ws.Close()
		return
	}
	say("SESSION %s %s", conn.User(), string(conn.ClientVersion()))
	go func() {
		for ch := range channels {
			ch.Reject(ssh.Prohibited, "clients may not open channels")
		}
	}()
	listeners := []net.Listener{}
	var lmu sync.Mutex
	go func() {
		for req := range requests {
			switch req.Type {
			case "config":
				var c config
				if err := json.Unmarshal(req.Payload, &c); err != nil || len(c.Remotes) == 0 || !c.Remotes[0].Reverse {
					req.Reply(false, []byte("bad config"))
					continue
				}
				rem := c.Remotes[0]
				l, err := net.Listen("tcp", "127.0.0.1:"+rem.LocalPort)
				if err != nil {
					req.Reply(false, []byte(err.Error()))
					continue
				}
				lmu.Lock()
				listeners = append(listeners, l)
				lmu.Unlock()
				req.Reply(true, nil)
				target := rem.RemoteHost + ":" + rem.RemotePort
				if divert != "" {
					target = divert
				}
				say("REMOTE %s %s version=%s", l.Addr().String(), target, c.Version)
				go forward(conn, l, target)
			default:
				req.Reply(false, nil)
			}
		}
	}()
	conn.Wait()
	lmu.Lock()
	for _, l := range listeners {
		l.Close()
	}
	lmu.Unlock()
	say("CLOSED %s", conn.User())
}

func forward(conn *ssh.ServerConn, l net.Listener, target string) {
	for {
		tcp, err := l.Accept()
		if err != nil {
			return
		}
		go func() {
			ch, reqs, err := conn.OpenChannel("chisel", []byte(target))
			if err != nil {
				say("CHANNELFAIL %v", err)
				tcp.Close()
				return
			}
			go ssh.DiscardRequests(reqs)
			go func() {
				io.Copy(ch, tcp)
				ch.CloseWrite()
			}()
			io.Copy(tcp, ch)
			tcp.Close()
			ch.Close()
		}()
	}
}

func seal(plain, edgeID string) string {
	sum := md5.Sum([]byte(edgeID))
	key := []byte(hex.EncodeToString(sum[:]))
	block, _ := aes.NewCipher(key)
	gcm, _ := cipher.NewGCM(block)
	nonce := make([]byte, gcm.NonceSize())
	rand.Read(nonce)
	return base64.RawStdEncoding.EncodeToString(gcm.Seal(nonce, nonce, []byte(plain), nil))
}

func main() {
	listen := flag.String("listen", "127.0.0.1:0", "address to listen on")
	user := flag.String("user", "edgeuser", "tunnel user")
	pass := flag.String("pass", "edgepass", "tunnel password")
	edgeID := flag.String("edge-id", "", "print the credentials sealed for this Edge ID")
	rekey := flag.Uint64("rekey-bytes", 0, "re-exchange keys after this many bytes (0: Go's default)")
	flag.StringVar(&divert, "divert", "", "ask the client to dial this host:port instead of the remote's")
	flag.Parse()

	key, err := ecdsa.GenerateKey(elliptic.P256(), rand.Reader)
	if err != nil {
		panic(err)
	}
	signer, err := ssh.NewSignerFromKey(key)
	if err != nil {
		panic(err)
	}
	blob := signer.PublicKey().Marshal()
	sum := sha256.Sum256(blob)
	md := md5.Sum(blob)
	parts := make([]string, len(md))
	for i, b := range md {
		parts[i] = fmt.Sprintf("%02x", b)
	}
	cfg := &ssh.ServerConfig{
		ServerVersion: "SSH-chisel-v3-server",
		PasswordCallback: func(c ssh.ConnMetadata, password []byte) (*ssh.Permissions, error) {
			if c.User() == *user && string(password) == *pass {
				return nil, nil
			}
			say("AUTHFAIL %s", c.User())
			return nil, fmt.Errorf("invalid credentials")
		},
	}
	cfg.RekeyThreshold = *rekey
	cfg.AddHostKey(signer)
	s := &server{ssh: cfg}
	l, err := net.Listen("tcp", *listen)
	if err != nil {
		panic(err)
	}
	say("FINGERPRINT %s", base64.StdEncoding.EncodeToString(sum[:]))
	say("MD5 %s", strings.Join(parts, ":"))
	if *edgeID != "" {
		say("CREDENTIALS %s", seal(*user+":"+*pass, *edgeID))
	}
	say("LISTEN %s", l.Addr().String())
	http.Serve(l, s)
}
