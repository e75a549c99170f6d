//! `kmsctl tls` (operator): the operator-CA path of the enclave's TLS
//! certificate (`docs/tls.md`): `csr` prints the enclave's PKCS#10 request,
//! `import` installs the chain the operator's CA issued for it.

use keyward_sdk::Client;

use crate::Failure;
use crate::args::TlsCommand;

pub(crate) async fn tls(client: &Client, command: TlsCommand) -> Result<(), Failure> {
    match command {
        TlsCommand::Csr => {
            let csr = client.get_tls_certificate_request().await?;
            print!("{csr}");
            if !csr.ends_with('\n') {
                println!();
            }
        }
        TlsCommand::Import { file } => {
            let chain =
                std::fs::read_to_string(&file).map_err(|e| Failure::Usage(format!("{}: {e}", file.display())))?;
            client.import_tls_certificate(&chain).await?;
            println!("certificate chain installed; new connections are served with it");
        }
    }
    Ok(())
}
