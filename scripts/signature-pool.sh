# shellcheck shell=bash
# Portainer's request signatures for wrk. Portainer signs every request
# anew (ECDSA's random k), so a pool of fresh signatures is made ahead by
# Go's crypto/ecdsa (benches/go-ecdsa) and sent one per request: the load
# generator, which shares the cores, does not sign.
#
#   signature_pool DIR COUNT [FILE] builds DIR/go-ecdsa and writes COUNT
#                                   fresh signatures of the test identity
#                                   to DIR/FILE (pool.txt)
#   signature_wrk_script POOL KEY   a wrk script sending POOL's signatures
#                                   in turn (wrk's two threads take halves)
#   test_signature                  "KEY SIGNATURE": the test identity's
#                                   public key and one signature by it
#                                   (fixtures/signatures/vectors.tsv)
#   signed_wrk_script KEY SIGNATURE a wrk script sending that one signature
#                                   with every request, as the docker CLI's
#                                   HttpHeaders would

signature_pool() {
  local dir=$1 count=$2 file=${3:-pool.txt}
  (cd benches/go-ecdsa && go build -o "$dir/go-ecdsa" .)
  "$dir/go-ecdsa" sign fixtures/signatures/keys/p256-a.pem Portainer-App "$count" >"$dir/$file"
}

# The same script serves a pool of one (the repeated signature): a header
# set per request costs wrk more than a fixed request, so both sides of a
# comparison run it.
signature_wrk_script() {
  cat <<LUA
local threads = 0
function setup(thread)
  thread:set("id", threads)
  threads = threads + 1
end
function init(args)
  signatures = {}
  for line in io.lines("$1") do signatures[#signatures + 1] = line end
  next_one = 1 + id * math.floor(#signatures / 2)
  wrk.headers["X-PortainerAgent-PublicKey"] = "$2"
end
function request()
  wrk.headers["X-PortainerAgent-Signature"] = signatures[next_one]
  next_one = next_one % #signatures + 1
  return wrk.format()
end
LUA
}

test_signature() {
  awk -F'\t' '$1 == "p256-a-good" {print $2, $3}' fixtures/signatures/vectors.tsv
}

signed_wrk_script() {
  cat <<LUA
wrk.headers["X-PortainerAgent-PublicKey"] = "$1"
wrk.headers["X-PortainerAgent-Signature"] = "$2"
LUA
}
