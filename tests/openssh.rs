//! The tunnel's SSH client against OpenSSH's sshd, a second independent
//! implementation besides chisel's Go x/crypto/ssh: key exchange with each
//! host key type, the host-key check, password authentication, re-keying
//! asked by the server (by bytes and by time), keepalives both ways, and
//! disconnects from either side. Each check is read from both ends: what
//! the client reports and what sshd logged. The chisel-specific parts
//! (the `config` request, `chisel` channels) are tested against chisel.

mod support;

use std::time::{Duration, Instant};

use berth_adapters::tunnel::ssh::kex::KexError;
use berth_adapters::tunnel::ssh::{SshError, SshSession};
use support::openssh::{self, Sshd, PASSWORD, USER};
use tokio::net::TcpStream;

const WAIT: Duration = Duration::from_secs(20);

async fn connect(sshd: &Sshd, password: &str) -> Result<SshSession, SshError> {
    let stream = TcpStream::connect(&sshd.address).await.unwrap();
    SshSession::connect(stream, sshd.client_config(password)).await
}

fn still_open(session: &SshSession) -> bool {
    let closed = session.closed();
    futures_util::FutureExt::now_or_never(closed).is_none()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn logs_in_with_each_host_key_type_and_keepalives_are_answered_both_ways() {
    let Some(binary) = openssh::binary() else {
        return;
    };
    for kind in ["ecdsa", "ed25519"] {
        // sshd asks every second and gives up after two unanswered asks.
        let sshd = Sshd::start(
            &binary,
            &[kind],
            &["ClientAliveInterval 1", "ClientAliveCountMax 2"],
        );
        // The client's own keepalives would keep sshd from asking: first a
        // client that asks rarely, so sshd's keepalive@openssh.com asks
        // come and are answered (sshd logs each answer's message type: 82,
        // REQUEST_FAILURE)...
        let stream = TcpStream::connect(&sshd.address).await.unwrap();
        let mut config = sshd.client_config(PASSWORD);
        config.keepalive = Duration::from_secs(60);
        let quiet = SshSession::connect(stream, config)
            .await
            .expect("the login");
        sshd.wait_log("remote software version berth_test", WAIT);
        sshd.wait_log(
            &format!("Accepted password for {USER} from 127.0.0.1"),
            WAIT,
        );
        sshd.wait_nth_log("Got 82/", 3, WAIT);
        assert!(still_open(&quiet), "{kind}: the session ended");
        assert!(!quiet.proven(), "no keepalive of berth's answered yet");
        drop(quiet);
        // ...then the client's `ping`s, which sshd answers with a failure
        // that counts as a sign of life.
        let session = connect(&sshd, PASSWORD).await.expect("the login");
        sshd.wait_nth_log("rtype ping want_reply 1", 6, WAIT);
        assert!(still_open(&session), "{kind}: the session ended");
        assert!(session.proven(), "sshd's answers prove the server works");
        let answer = session
            .request("berth-test@example.com", b"anything".to_vec())
            .await
            .unwrap();
        assert!(
            answer.is_err(),
            "sshd does not know the request: {answer:?}"
        );
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_disconnect_from_either_side_ends_the_session_with_its_reason() {
    let Some(binary) = openssh::binary() else {
        return;
    };
    let sshd = Sshd::start(&binary, &["ecdsa"], &["UnusedConnectionTimeout 2"]);
    let ours = connect(&sshd, PASSWORD).await.unwrap();
    ours.close();
    let reason = tokio::time::timeout(WAIT, ours.closed()).await.unwrap();
    assert_eq!(reason, "closed by the agent");
    sshd.wait_log("Received disconnect from 127.0.0.1 port", WAIT);
    let line = sshd.wait_log(":11: closed by the agent", WAIT);
    assert!(line.contains("Received disconnect"), "{line}");

    // A connection with no channels, ended by sshd after two seconds.
    let theirs = connect(&sshd, PASSWORD).await.unwrap();
    let reason = tokio::time::timeout(WAIT, theirs.closed()).await.unwrap();
    assert!(!reason.is_empty());
    sshd.wait_log("terminating inactive connection", WAIT);
    eprintln!("sshd ended the session: {reason}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_wrong_password_is_refused() {
    let Some(binary) = openssh::binary() else {
        return;
    };
    let sshd = Sshd::start(&binary, &["ecdsa"], &[]);
    match connect(&sshd, "wrong horse").await {
        Err(SshError::AuthRejected) => {}
        Err(other) => panic!("refused for another reason: {other}"),
        Ok(_) => panic!("a wrong password logged in"),
    }
    sshd.wait_log(&format!("Failed password for {USER} from 127.0.0.1"), WAIT);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_host_key_other_than_the_one_named_is_refused_before_the_password_is_sent() {
    let Some(binary) = openssh::binary() else {
        return;
    };
    let sshd = Sshd::start(&binary, &["ed25519"], &[]);
    let other = Sshd::start(&binary, &["ed25519"], &[]);
    let stream = TcpStream::connect(&sshd.address).await.unwrap();
    let mut config = sshd.client_config(PASSWORD);
    config.fingerprint = other.fingerprints[0].1.clone();
    match SshSession::connect(stream, config).await {
        Err(SshError::Kex(KexError::WrongFingerprint(got))) => {
            assert_eq!(got, sshd.fingerprints[0].1, "the server's real fingerprint");
        }
        Err(other) => panic!("refused for another reason: {other}"),
        Ok(_) => panic!("an unknown host key was accepted"),
    }
    assert!(
        !sshd.log().iter().any(|line| line.contains("password for")),
        "the password was offered: {:#?}",
        sshd.log()
    );
}

/// Sends global requests of `size` bytes until `exchanges` key exchanges
/// have happened, each answered (sshd knows none of them).
async fn requests_until(session: &SshSession, size: usize, exchanges: u32) -> usize {
    let deadline = Instant::now() + WAIT;
    let mut sent = 0;
    while session.key_exchanges() < exchanges {
        assert!(
            Instant::now() < deadline,
            "{} exchanges",
            session.key_exchanges()
        );
        let answer = session
            .request("berth-test@example.com", vec![b'x'; size])
            .await
            .expect("answered across the re-key");
        assert!(answer.is_err());
        sent += size;
    }
    sent
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_server_re_keys_by_bytes_and_the_session_carries_on() {
    let Some(binary) = openssh::binary() else {
        return;
    };
    let sshd = Sshd::start(&binary, &["ecdsa"], &["RekeyLimit 64K none"]);
    let session = connect(&sshd, PASSWORD).await.unwrap();
    let sent = requests_until(&session, 8 * 1024, 3).await;
    eprintln!("two re-keys after {} KiB sent", sent / 1024);
    assert!(sent >= 64 * 1024, "re-keyed after {sent} bytes only");
    sshd.wait_log("rekeying", WAIT);
    let answer = session.request("after@example.com", Vec::new()).await;
    assert!(matches!(answer, Ok(Err(_))), "{answer:?}");
    assert!(still_open(&session));
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_server_re_keys_by_time_and_the_session_carries_on() {
    let Some(binary) = openssh::binary() else {
        return;
    };
    let sshd = Sshd::start(&binary, &["ed25519"], &["RekeyLimit default 1"]);
    let session = connect(&sshd, PASSWORD).await.unwrap();
    let started = Instant::now();
    // sshd's clock for this counts whole seconds, so the two re-keys may
    // come only a little over a second apart; what shows they came by time
    // is how little was sent (sshd's byte limit for AES-GCM is gigabytes).
    let sent = requests_until(&session, 16, 3).await;
    eprintln!(
        "two re-keys in {:?}, {} KiB sent",
        started.elapsed(),
        sent / 1024
    );
    assert!(started.elapsed() >= Duration::from_millis(900), "too soon");
    assert!(sent < 16 << 20, "re-keyed after {sent} bytes");
    assert!(still_open(&session));
}
