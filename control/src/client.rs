//! A gRPC channel to podswitchd's control socket, for podswitchctl, the CNI plugin and
//! the benches.

use std::path::Path;
use tonic::transport::{Channel, Endpoint, Uri};

/// Connects to the daemon listening on `socket`.
pub async fn connect(socket: &Path) -> Result<Channel, tonic::transport::Error> {
    let path = socket.to_path_buf();
    // The URI is a placeholder: the connector below ignores it and dials the socket.
    Endpoint::from_static("http://podswitchd")
        .connect_with_connector(tower::service_fn(move |_: Uri| {
            let path = path.clone();
            async move {
                Ok::<_, std::io::Error>(hyper_util::rt::TokioIo::new(tokio::net::UnixStream::connect(path).await?))
            }
        }))
        .await
}
