//! The real Kubernetes control plane `scripts/test` starts (etcd and
//! kube-apiserver 1.34 on loopback, `scripts/kube.sh`), the real kubectl,
//! and berth started as a pod of that cluster would start it.
//!
//! Tests share one API server: each works in namespaces and service
//! accounts named for it alone.

use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::process::{Command, Output};

use super::berth_process::{from_env_or_skip, BerthProcess};
use super::piped::run_with_input;
use super::temp_dir::{temp_dir, TempDir};
use super::unique::unique;

pub struct KubeCluster {
    /// `scripts/kube.sh`'s folder: `ca.crt`, `ca.key`, `kubeconfig`.
    pub dir: PathBuf,
    pub address: SocketAddr,
    kubectl: PathBuf,
}

/// The cluster, or `None` when the suite skips what needs one.
pub fn cluster() -> Option<KubeCluster> {
    let hint = "run scripts/test, which starts one (BERTH_TEST_KUBE, BERTH_TEST_KUBECTL)";
    let dir = from_env_or_skip("BERTH_TEST_KUBE", "a Kubernetes API server", hint)?;
    let kubectl = from_env_or_skip("BERTH_TEST_KUBECTL", "kubectl", hint)?;
    let dir = PathBuf::from(dir);
    let address = std::fs::read_to_string(dir.join("address"))
        .expect("scripts/kube.sh writes the address")
        .trim()
        .parse()
        .expect("an IP and a port");
    Some(KubeCluster {
        dir,
        address,
        kubectl: kubectl.into(),
    })
}

/// A pod's service account folder: `token` and `ca.crt`.
pub struct ServiceAccount {
    pub dir: TempDir,
    pub namespace: String,
    pub name: String,
}

impl ServiceAccount {
    pub fn token(&self) -> String {
        std::fs::read_to_string(self.dir.join("token")).unwrap()
    }
}

impl KubeCluster {
    /// kubectl as the cluster's administrator; panics unless it succeeds.
    pub fn kubectl(&self, args: &[&str]) -> String {
        self.kubectl_with_input(args, "")
    }

    pub fn kubectl_with_input(&self, args: &[&str], input: &str) -> String {
        let output = self.try_kubectl(args, input);
        assert!(
            output.status.success(),
            "kubectl {args:?}: {}",
            String::from_utf8_lossy(&output.stderr)
        );
        String::from_utf8_lossy(&output.stdout).into_owned()
    }

    pub fn try_kubectl(&self, args: &[&str], input: &str) -> Output {
        let mut command = Command::new(&self.kubectl);
        command.arg("--kubeconfig").arg(self.dir.join("kubeconfig"));
        command.args(args);
        run_with_input(&mut command, input)
    }

    /// The kubectl program, for a kubeconfig of the test's own.
    pub fn kubectl_program(&self) -> &Path {
        &self.kubectl
    }

    /// A new namespace, named after `purpose` and unique to this test.
    pub fn namespace(&self, purpose: &str) -> String {
        let name = unique(&format!("{purpose}-"));
        self.kubectl(&["create", "namespace", &name]);
        name
    }

    /// A cluster role that reads everything and changes nothing (the
    /// built-in `view` leaves secrets out).
    pub fn reader_role(&self) -> &'static str {
        const READER: &str = "apiVersion: rbac.authorization.k8s.io/v1\nkind: ClusterRole\n\
            metadata:\n  name: berth-test-reader\nrules:\n- apiGroups: [\"*\"]\n  \
            resources: [\"*\"]\n  verbs: [get, list, watch]\n";
        self.kubectl_with_input(&["apply", "-f", "-"], READER);
        "berth-test-reader"
    }

    /// A server certificate for 127.0.0.1 that the cluster's CA signed:
    /// its PEM file and its key's, in `dir`.
    pub fn server_certificate(&self, dir: &Path) -> (String, String) {
        let ca_key =
            rcgen::KeyPair::from_pem(&std::fs::read_to_string(self.dir.join("ca.key")).unwrap())
                .unwrap();
        let issuer = rcgen::Issuer::from_ca_cert_pem(
            &std::fs::read_to_string(self.dir.join("ca.crt")).unwrap(),
            ca_key,
        )
        .unwrap();
        let key = rcgen::KeyPair::generate().unwrap();
        let certificate = rcgen::CertificateParams::new(vec!["127.0.0.1".to_string()])
            .unwrap()
            .signed_by(&key, &issuer)
            .unwrap();
        let (cert_path, key_path) = (dir.join("server.pem"), dir.join("server-key.pem"));
        std::fs::write(&cert_path, certificate.pem()).unwrap();
        std::fs::write(&key_path, key.serialize_pem()).unwrap();
        (
            cert_path.display().to_string(),
            key_path.display().to_string(),
        )
    }

    /// A service account in `namespace` bound to the cluster role `role`
    /// (cluster-wide, or in `scope` only), and a folder that holds its
    /// token and the cluster's CA as a pod's would.
    pub fn service_account(
        &self,
        namespace: &str,
        role: &str,
        scope: Option<&str>,
    ) -> ServiceAccount {
        let name = unique("sa-");
        self.kubectl(&["-n", namespace, "create", "serviceaccount", &name]);
        let subject = format!("--serviceaccount={namespace}:{name}");
        let role_flag = format!("--clusterrole={role}");
        match scope {
            None => self.kubectl(&["create", "clusterrolebinding", &name, &role_flag, &subject]),
            Some(scope) => self.kubectl(&[
                "-n",
                scope,
                "create",
                "rolebinding",
                &name,
                &role_flag,
                &subject,
            ]),
        };
        let token = self.kubectl(&["-n", namespace, "create", "token", &name]);
        let dir = temp_dir("service-account");
        std::fs::write(dir.join("token"), token.trim()).unwrap();
        std::fs::copy(self.dir.join("ca.crt"), dir.join("ca.crt")).unwrap();
        ServiceAccount {
            dir,
            namespace: namespace.to_string(),
            name,
        }
    }

    /// berth as a pod of this cluster starts it: `KUBERNETES_SERVICE_HOST`
    /// and `_PORT` name the API server, `account` is its service account
    /// folder; no Docker engine.
    pub fn berth(&self, account: &Path, env: &[(&str, &str)]) -> BerthProcess {
        let host = self.address.ip().to_string();
        let port = self.address.port().to_string();
        let account = account.display().to_string();
        let mut all = vec![
            ("KUBERNETES_SERVICE_HOST", host.as_str()),
            ("KUBERNETES_SERVICE_PORT", port.as_str()),
            ("KUBERNETES_SERVICE_ACCOUNT_DIR", account.as_str()),
            ("DOCKER_HOST", "unix:///nonexistent/docker.sock"),
        ];
        all.extend_from_slice(env);
        BerthProcess::start(&all)
    }
}
