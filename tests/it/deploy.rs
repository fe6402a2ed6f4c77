//! compose.yaml and the Dockerfile cannot be run here (no Docker engine), so they are parsed and
//! checked against what the rest of the repository says.

use serde_yaml::Value;

fn repo_file(name: &str) -> String {
    std::fs::read_to_string(format!("{}/{name}", env!("CARGO_MANIFEST_DIR"))).unwrap()
}

#[test]
fn compose_runs_two_instances_on_one_postgres_and_one_redis() {
    let mut compose: Value = serde_yaml::from_str(&repo_file("compose.yaml")).unwrap();
    // The instances share their settings through a YAML anchor and merge key (`<<: *junction`).
    compose.apply_merge().unwrap();
    let services = compose["services"].as_mapping().unwrap();
    let image = |name: &str| compose["services"][name]["image"].as_str().unwrap_or_default().to_owned();
    assert!(image("postgres").starts_with("postgres:16"));
    assert!(image("redis").starts_with("redis:7"));

    let instances: Vec<(&str, &Value)> = services
        .iter()
        .map(|(name, s)| (name.as_str().unwrap(), s))
        .filter(|(name, _)| name.starts_with("junction-"))
        .collect();
    assert_eq!(instances.len(), 2);
    let mut host_ports = Vec::new();
    let mut builders = Vec::new();
    for (name, instance) in &instances {
        // One image for both, never looked for on a registry (it exists nowhere but here).
        assert_eq!(instance["image"], Value::from("junction:local"), "{name}");
        assert_eq!(instance["pull_policy"], Value::from("never"), "{name}");
        if instance.get("build").is_some() {
            assert_eq!(instance["build"], Value::from("."));
            builders.push(*name);
        }
        assert_eq!(instance["env_file"], Value::from("compose.env"), "secrets come from the env file");
        let env = &instance["environment"];
        assert_eq!(env["DATABASE_URL"], Value::from("postgres://junction:junction@postgres:5432/junction"));
        assert_eq!(env["REDIS_URL"], Value::from("redis://redis:6379"));
        for dependency in ["postgres", "redis"] {
            assert_eq!(instance["depends_on"][dependency]["condition"], Value::from("service_healthy"));
        }
        let test: Vec<&str> =
            instance["healthcheck"]["test"].as_sequence().unwrap().iter().map(|v| v.as_str().unwrap()).collect();
        assert_eq!(test[..3], ["CMD", "junction", "healthcheck"]);
        assert!(test[3].ends_with(":8787"), "the container port is 8787");
        assert_eq!(instance["stop_signal"], Value::from("SIGTERM"), "SIGTERM drains");
        let port = instance["ports"][0].as_str().unwrap();
        assert!(port.ends_with(":8787"));
        host_ports.push(port.split(':').next().unwrap().to_owned());
    }
    assert_eq!(builders.len(), 1, "the image is built once, by one instance: {builders:?}");
    assert_ne!(host_ports[0], host_ports[1]);
    // Every service with a healthcheck has a test command.
    for (name, service) in services {
        if let Some(check) = service.get("healthcheck") {
            assert!(check["test"].as_sequence().is_some_and(|t| !t.is_empty()), "{name:?}");
        }
    }
}

/// The Dockerfile's instructions, with continuation lines (`\` at the end) joined.
fn dockerfile_instructions(dockerfile: &str) -> Vec<(String, String)> {
    let mut instructions = Vec::new();
    let mut current = String::new();
    for line in dockerfile.lines().filter(|l| !l.trim_start().starts_with('#') && !l.trim().is_empty()) {
        match line.trim_end().strip_suffix('\\') {
            Some(part) => current.push_str(part),
            None => {
                current.push_str(line);
                let (instruction, arguments) = current.trim().split_once(' ').unwrap();
                instructions.push((instruction.to_owned(), arguments.trim().to_owned()));
                current.clear();
            }
        }
    }
    assert!(current.is_empty(), "the Dockerfile ends inside a continued line");
    instructions
}

#[test]
fn dockerfile_builds_and_runs_the_junction_binary() {
    let dockerfile = repo_file("Dockerfile");
    let instructions = dockerfile_instructions(&dockerfile);
    let known =
        ["FROM", "WORKDIR", "COPY", "RUN", "USER", "ENV", "EXPOSE", "HEALTHCHECK", "ENTRYPOINT", "CMD", "VOLUME"];
    for (instruction, _) in &instructions {
        assert!(known.contains(&instruction.as_str()), "unexpected instruction {instruction}");
    }
    let froms: Vec<&str> = instructions.iter().filter(|(i, _)| i == "FROM").map(|(_, a)| a.as_str()).collect();
    assert_eq!(froms.len(), 2, "a build stage and a runtime stage");
    let rust_image = froms[0].split_whitespace().next().unwrap();
    let rust_version = rust_image.trim_start_matches("rust:").split('-').next().unwrap();
    let manifest = repo_file("Cargo.toml");
    let required = manifest.lines().find_map(|l| l.strip_prefix("rust-version = ")).unwrap().trim_matches('"');
    assert!(version_at_least(rust_version, required), "{rust_image} is older than rust-version {required}");
    assert!(dockerfile.contains("cargo build --release --locked --bin junction"));
    assert!(dockerfile.contains("COPY --from=build /src/target/release/junction /usr/local/bin/junction"));
    assert!(dockerfile.contains("COPY config.toml /etc/junction/config.toml"));
    assert!(dockerfile.contains(r#"ENTRYPOINT ["junction", "--config", "/etc/junction/config.toml"]"#));
    assert!(dockerfile.contains(r#"CMD ["junction", "healthcheck", "http://127.0.0.1:8787"]"#));
    assert!(dockerfile.contains("JUNCTION_SERVER__LISTEN=0.0.0.0:8787"));
    // The default SQLite store (relative to the working directory) must be in a volume.
    assert!(dockerfile.contains("WORKDIR /var/lib/junction") && dockerfile.contains("VOLUME /var/lib/junction"));
    assert!(dockerfile.contains("USER junction"), "not root");
    assert!(std::path::Path::new(concat!(env!("CARGO_MANIFEST_DIR"), "/Cargo.lock")).exists(), "--locked needs it");
}

/// The dependencies are built in layers that only the manifest and the lockfile invalidate: first
/// the manifests and stand-ins for every target, one build, then the sources and a second build.
#[test]
fn dockerfile_builds_the_dependencies_before_copying_the_sources() {
    let instructions = dockerfile_instructions(&repo_file("Dockerfile"));
    let build_stage: Vec<(&str, &str)> = instructions
        .iter()
        .map(|(i, a)| (i.as_str(), a.as_str()))
        .skip_while(|(i, _)| *i != "FROM")
        .skip(1)
        .take_while(|(i, _)| *i != "FROM")
        .collect();
    let position = |wanted: &dyn Fn(&str, &str) -> bool| {
        build_stage.iter().position(|(i, a)| wanted(i, a)).expect("an instruction the build stage needs")
    };
    let builds: Vec<usize> = build_stage
        .iter()
        .enumerate()
        .filter(|(_, (i, a))| *i == "RUN" && a.contains("cargo build --release --locked --bin junction"))
        .map(|(at, _)| at)
        .collect();
    assert_eq!(builds.len(), 2, "a dependency build and the real one");
    let manifests = position(&|i, a| i == "COPY" && a == "Cargo.toml Cargo.lock ./");
    let sources = position(&|i, a| i == "COPY" && a == "src src");
    assert!(manifests < builds[0] && builds[0] < sources && sources < builds[1]);
    assert!(build_stage[..builds[0]].iter().all(|(i, a)| *i != "COPY" || *a == "Cargo.toml Cargo.lock ./"));
    // Every target the manifest names (and the benchmark binary cargo finds by its folder) has a
    // stand-in before the first build; the crate roots are touched before the second.
    let stand_ins = build_stage[builds[0]].1;
    let manifest = repo_file("Cargo.toml");
    let test_path = manifest.lines().find_map(|l| l.strip_prefix("path = ")).unwrap().trim_matches('"');
    for target in ["src/main.rs", "src/lib.rs", "src/bin/junction-bench/main.rs", test_path] {
        assert!(std::path::Path::new(&format!("{}/{target}", env!("CARGO_MANIFEST_DIR"))).exists(), "{target}");
        assert!(stand_ins.contains(target), "no stand-in for {target}");
    }
    assert!(build_stage[builds[1]].1.contains("touch src/lib.rs src/main.rs"));
    // The migrations are compiled into the binary (sqlx::migrate!), so they come before it.
    assert!(position(&|i, a| i == "COPY" && a == "migrations migrations") < builds[1]);
}

fn version_at_least(have: &str, need: &str) -> bool {
    let parse = |v: &str| v.split('.').map(|p| p.parse::<u32>().unwrap()).collect::<Vec<_>>();
    parse(have) >= parse(need)
}

/// The env file example that compose.yaml points at: every key is a real configuration key,
/// secrets are set, and anonymous access is off.
#[test]
// figment::Jail's closure returns figment's (large) error type; that is its API, not ours.
#[allow(clippy::result_large_err)]
fn the_compose_env_example_sets_secrets_and_turns_anonymous_access_off() {
    let example = repo_file("compose.env.example");
    let mut jail_vars = Vec::new();
    for line in example.lines().filter(|l| !l.trim().is_empty() && !l.starts_with('#')) {
        let (name, value) = line.split_once('=').expect("NAME=value");
        jail_vars.push((name.to_owned(), value.to_owned()));
    }
    figment::Jail::expect_with(|jail| {
        for (name, value) in &jail_vars {
            jail.set_env(name, value);
        }
        let config = junction::config::Config::load(std::path::Path::new("none.toml")).expect("the example loads");
        assert!(!config.auth.jwt_secret.is_empty() && !config.auth.admin_secret.is_empty());
        assert!(config.anonymous_protocols().is_empty(), "anonymous access is off");
        Ok(())
    });
}
