# shellcheck shell=bash
# nginx as the benchmarks' plain-proxy peer: TLS (a P-256 certificate made
# here) in front of an engine socket, with a keep-alive upstream.
#
#   nginx_config DIR PORT SOCKET [PLAIN_PORT]
#       writes DIR/nginx.conf (and DIR/cert.pem, DIR/key.pem); run it with
#       nginx -c DIR/nginx.conf -g 'daemon off;'. With PLAIN_PORT, the same
#       proxy also listens there without TLS: the hop's cost alone.
nginx_config() {
  local dir=$1 port=$2 socket=$3 plain=${4:-}
  openssl req -x509 -newkey ec -pkeyopt ec_paramgen_curve:P-256 -nodes -subj /CN=bench -days 1 \
    -keyout "$dir/key.pem" -out "$dir/cert.pem" 2>/dev/null
  # Workers run as root: the engine socket is root's.
  cat >"$dir/nginx.conf" <<CONF
user root;
worker_processes auto;
pid $dir/nginx.pid;
error_log $dir/nginx.err;
events { worker_connections 4096; }
http {
  access_log off;
  upstream engine { server unix:$socket; keepalive 64; }
  server {
    listen 127.0.0.1:$port ssl;
    ${plain:+listen 127.0.0.1:$plain;}
    ssl_certificate $dir/cert.pem;
    ssl_certificate_key $dir/key.pem;
    location / {
      proxy_pass http://engine;
      proxy_http_version 1.1;
      proxy_set_header Connection "";
      proxy_buffering off;
    }
  }
}
CONF
}
