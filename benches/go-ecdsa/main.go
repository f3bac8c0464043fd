// Go's crypto/ecdsa for berth's benchmarks, two ways:
//
//	go-ecdsa VECTORS.tsv NAME      times verifying a vector of
//	                               fixtures/signatures/vectors.tsv: the
//	                               baseline the Go agent sets for a fresh
//	                               Portainer signature (scripts/bench-signature)
//	go-ecdsa sign KEY.pem MESSAGE N   prints N signatures of MESSAGE as
//	                               Portainer makes them (MD5, then ECDSA with
//	                               a random k; r and s, unpadded base64), the
//	                               pool of fresh signatures scripts/bench sends
package main

import (
	"bufio"
	"crypto/ecdsa"
	"crypto/md5"
	"crypto/rand"
	"crypto/x509"
	"encoding/base64"
	"encoding/hex"
	"encoding/pem"
	"fmt"
	"math/big"
	"os"
	"strconv"
	"strings"
	"time"
)

func main() {
	if len(os.Args) == 5 && os.Args[1] == "sign" {
		sign(os.Args[2], os.Args[3], os.Args[4])
		return
	}
	if len(os.Args) != 3 {
		fmt.Fprintln(os.Stderr, "usage: go-ecdsa VECTORS.tsv NAME | go-ecdsa sign KEY.pem MESSAGE N")
		os.Exit(2)
	}
	key, signature, message := vector(os.Args[1], os.Args[2])
	digest := md5.Sum([]byte(message))
	r := new(big.Int).SetBytes(signature[:32])
	s := new(big.Int).SetBytes(signature[32:])
	if !ecdsa.Verify(key, digest[:], r, s) {
		fmt.Fprintln(os.Stderr, "the vector does not verify")
		os.Exit(1)
	}
	// Doubling rounds until one takes a second, as berth's bench does.
	for calls := 1; ; calls *= 2 {
		started := time.Now()
		for i := 0; i < calls; i++ {
			// A fresh digest each time would not change the cost; the
			// same inputs keep the comparison exact.
			ecdsa.Verify(key, digest[:], r, s)
		}
		elapsed := time.Since(started)
		if elapsed >= time.Second {
			fmt.Printf("%.0f\n", float64(elapsed.Nanoseconds())/float64(calls))
			return
		}
	}
}

func vector(path, name string) (*ecdsa.PublicKey, []byte, string) {
	file, err := os.Open(path)
	if err != nil {
		fail(err)
	}
	defer file.Close()
	lines := bufio.NewScanner(file)
	for lines.Scan() {
		fields := strings.Split(lines.Text(), "\t")
		if len(fields) < 4 || fields[0] != name {
			continue
		}
		der, err := hex.DecodeString(fields[1])
		if err != nil {
			fail(err)
		}
		parsed, err := x509.ParsePKIXPublicKey(der)
		if err != nil {
			fail(err)
		}
		key, ok := parsed.(*ecdsa.PublicKey)
		if !ok {
			fail(fmt.Errorf("%s is not an ECDSA key", name))
		}
		signature, err := base64.RawStdEncoding.DecodeString(fields[2])
		if err != nil || len(signature) != 64 {
			fail(fmt.Errorf("%s: bad signature", name))
		}
		return key, signature, fields[3]
	}
	fail(fmt.Errorf("no vector %s in %s", name, path))
	return nil, nil, ""
}

func sign(keyPath, message, count string) {
	n, err := strconv.Atoi(count)
	if err != nil || n < 1 {
		fail(fmt.Errorf("N must be a positive number, not %q", count))
	}
	text, err := os.ReadFile(keyPath)
	if err != nil {
		fail(err)
	}
	block, _ := pem.Decode(text)
	if block == nil {
		fail(fmt.Errorf("%s holds no PEM block", keyPath))
	}
	// openssl writes EC keys as SEC 1 ("EC PRIVATE KEY") or PKCS #8.
	key, err := x509.ParseECPrivateKey(block.Bytes)
	if err != nil {
		parsed, err8 := x509.ParsePKCS8PrivateKey(block.Bytes)
		ecKey, ok := parsed.(*ecdsa.PrivateKey)
		if err8 != nil || !ok {
			fail(fmt.Errorf("%s is not an ECDSA key: %v", keyPath, err))
		}
		key = ecKey
	}
	digest := md5.Sum([]byte(message))
	out := bufio.NewWriter(os.Stdout)
	defer out.Flush()
	signature := make([]byte, 64)
	for i := 0; i < n; i++ {
		r, s, err := ecdsa.Sign(rand.Reader, key, digest[:])
		if err != nil {
			fail(err)
		}
		clear(signature)
		r.FillBytes(signature[:32])
		s.FillBytes(signature[32:])
		fmt.Fprintln(out, base64.RawStdEncoding.EncodeToString(signature))
	}
}

func fail(err error) {
	fmt.Fprintln(os.Stderr, err)
	os.Exit(1)
}
