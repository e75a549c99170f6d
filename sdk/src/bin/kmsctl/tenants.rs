//! `kmsctl tenant` (operator) and `kmsctl access-key` (a tenant's KeyAdmin): create, list,
//! disable/enable or delete, printing new secrets exactly once.

use keyward_sdk::Client;

use crate::Failure;
use crate::args::{AccessKeyCommand, TenantCommand};
use crate::output::{clean, epoch_seconds};

pub(crate) async fn tenant(client: &Client, command: TenantCommand) -> Result<(), Failure> {
    match command {
        TenantCommand::Create { id } => {
            let created = client.create_tenant(&id).await?;
            println!("TenantId        {}", created.tenant_id);
            println!("AccessKeyId     {}", created.access_key_id);
            println!("SecretAccessKey {}", created.secret_access_key.expose());
            eprintln!("The secret access key is shown only this once: store it now.");
        }
        TenantCommand::List => {
            for t in client.list_tenants().await? {
                let state = if t.enabled { "enabled" } else { "disabled" };
                println!("{}\t{state}\t{}", clean(&t.tenant_id), epoch_seconds(t.creation_date));
            }
        }
        TenantCommand::Disable { id } => {
            client.disable_tenant(&id).await?;
            println!("tenant {id} disabled");
        }
        TenantCommand::Enable { id } => {
            client.enable_tenant(&id).await?;
            println!("tenant {id} enabled");
        }
    }
    Ok(())
}

pub(crate) async fn access_key(client: &Client, command: AccessKeyCommand) -> Result<(), Failure> {
    match command {
        AccessKeyCommand::Create { role } => {
            let created = client.create_access_key(role).await?;
            println!("AccessKeyId     {}", created.access_key_id);
            println!("SecretAccessKey {}", created.secret_access_key.expose());
            println!("Role            {}", created.role);
            eprintln!("The secret access key is shown only this once: store it now.");
        }
        AccessKeyCommand::List => {
            for k in client.list_access_keys().await? {
                println!(
                    "{}\t{}\t{}",
                    clean(&k.access_key_id),
                    clean(&k.roles.join(",")),
                    epoch_seconds(k.creation_date)
                );
            }
        }
        AccessKeyCommand::Delete { id } => {
            client.delete_access_key(&id).await?;
            println!("access key {id} deleted");
        }
    }
    Ok(())
}
