//! The PostgreSQL server of the tests: `./scripts/test` starts a throw-away one and names it
//! in `CAULDRON_TEST_POSTGRES`; each test gets a database of its own there.

/// The URL of a new, empty database called after `name`.
pub fn fresh_database(name: &str) -> String {
    let admin = std::env::var("CAULDRON_TEST_POSTGRES").expect(
        "CAULDRON_TEST_POSTGRES is not set: run ./scripts/test, which starts a PostgreSQL for the tests, \
         or set it to the URL of a server where databases may be created and dropped",
    );
    let database: String = format!("t_{name}")
        .chars()
        .map(|c| if c.is_ascii_alphanumeric() { c.to_ascii_lowercase() } else { '_' })
        .collect();
    // Two statements: a multi-statement string is one transaction, which these may not run in.
    let sql =
        [format!("DROP DATABASE IF EXISTS {database} WITH (FORCE)"), format!("CREATE DATABASE {database}")];
    // Its own thread: the synchronous client may not run on an async test's runtime.
    let admin_url = admin.clone();
    std::thread::spawn(move || {
        let mut client = postgres::Client::connect(&admin_url, postgres::NoTls)
            .unwrap_or_else(|e| panic!("CAULDRON_TEST_POSTGRES={admin_url}: {e}"));
        for statement in &sql {
            client.batch_execute(statement).unwrap();
        }
    })
    .join()
    .unwrap();
    let (server, _) =
        admin.rsplit_once('/').expect("CAULDRON_TEST_POSTGRES: postgres://user@host:port/database");
    format!("{server}/{database}")
}
