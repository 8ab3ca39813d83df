//! The pull views over real HTTP: the REST cursor feed, the STIX 2.1 export and the TAXII 2.1
//! server, on an embedded hub with a SQLite file. (standards.rs runs the OASIS tools on the
//! same views.)

mod viewkit;

use std::collections::HashSet;

use serde_json::{Value, json};
use viewkit::{ALPHA_HOST, ALPHA_NAME, ALPHA_ORG, Setup};

async fn get(setup: &Setup, key: Option<&str>, path: &str) -> reqwest::Response {
    let mut request = setup.client.get(format!("{}{path}", setup.base));
    if let Some(key) = key {
        request = request.basic_auth("consumer", Some(key));
    }
    request.send().await.unwrap()
}

async fn json_of(response: reqwest::Response) -> Value {
    let text = response.text().await.unwrap();
    serde_json::from_str(&text).unwrap_or_else(|e| panic!("{e}: {text}"))
}

#[tokio::test]
async fn stix_export_maps_every_indicator_and_names_reporters_by_pseudonym_only() {
    let setup = viewkit::start().await;
    let ids = viewkit::publish_all(&setup).await;
    let key = setup.beta_key.clone();

    let response = get(&setup, Some(&key), "/v1/stix?limit=100").await;
    assert_eq!(response.status(), 200);
    assert_eq!(
        response.headers()["content-type"],
        "application/stix+json;version=2.1"
    );
    let cursor = response.headers()["x-apiguard-cursor"]
        .to_str()
        .unwrap()
        .to_owned();
    let text = response.text().await.unwrap();
    // Re-export: byte for byte the same.
    let again = get(&setup, Some(&key), "/v1/stix?limit=100")
        .await
        .text()
        .await
        .unwrap();
    assert_eq!(text, again, "a re-export differs");

    // Nothing that names alpha, or anything only its raw report held.
    for secret in [
        ALPHA_NAME,
        ALPHA_ORG,
        ALPHA_HOST,
        setup.alpha_id.as_str(),
        "secretbank",
        "1' OR '1'='1",
        "description\":\"seen by",
    ] {
        assert!(
            !text
                .to_ascii_lowercase()
                .contains(&secret.to_ascii_lowercase()),
            "`{secret}` leaked into the STIX export"
        );
    }

    let bundle: Value = serde_json::from_str(&text).unwrap();
    assert_eq!(bundle["type"], "bundle");
    let objects = bundle["objects"].as_array().unwrap();
    let of_type = |t: &str| -> Vec<&Value> { objects.iter().filter(|o| o["type"] == t).collect() };
    for object in objects {
        assert_eq!(object["spec_version"], "2.1", "{object}");
    }
    let ids_in_bundle: HashSet<&str> = objects.iter().map(|o| o["id"].as_str().unwrap()).collect();
    assert_eq!(
        ids_in_bundle.len(),
        objects.len(),
        "duplicate ids in a bundle"
    );

    // Every report has exactly one sighting naming it; its count is the reporter's.
    let sightings = of_type("sighting");
    assert_eq!(sightings.len(), ids.len());
    for id in &ids {
        assert_eq!(
            sightings
                .iter()
                .filter(|s| s["description"].as_str().unwrap().contains(id.as_str()))
                .count(),
            1,
            "report {id}"
        );
    }
    let sqli_sighting = sightings
        .iter()
        .find(|s| s["description"].as_str().unwrap().contains("sqli"))
        .unwrap();
    assert_eq!(sqli_sighting["count"], 12);

    // Identities: exactly the two reporters' pseudonyms, nothing else.
    let identities = of_type("identity");
    assert_eq!(identities.len(), 2);
    for identity in &identities {
        let name = identity["name"].as_str().unwrap();
        assert!(
            name.starts_with("anon-") && name.len() == 37,
            "identity name {name}"
        );
    }
    let identity_ids: HashSet<&str> = identities
        .iter()
        .map(|i| i["id"].as_str().unwrap())
        .collect();

    // Patterns per indicator kind, with STIX escaping.
    let patterns: Vec<&str> = of_type("indicator")
        .iter()
        .map(|i| i["pattern"].as_str().unwrap())
        .collect();
    for expected in [
        "[ipv4-addr:value = '203.0.113.77']",
        "[ipv6-addr:value ISSUBSET '2001:db8:5:6::/64']",
        "[ipv4-addr:value ISSUBSET '198.51.100.0/24']",
        "[network-traffic:extensions.'http-request-ext'.request_header.'User-Agent' = 'curl/8.5.0']",
        "[artifact:hashes.'SHA-256' = '8c6976e5b5410415bde908bd4dee15dfb167a9c873fc4bb8a81f6f2ab448a918']",
        "[x-apiguard-tls-client:ja3 = 'e7d705a3286e19ea42f587b344ee6865']",
        "[x-apiguard-tls-client:ja4 = 't13d1516h2_8daaf6152771_b186095e22b6']",
        "[ipv4-addr:value = '192.0.2.10']",
    ] {
        assert!(
            patterns.contains(&expected),
            "no {expected} in {patterns:#?}"
        );
    }
    let quoted = patterns
        .iter()
        .find(|p| p.contains("it\\'s-a-bot"))
        .unwrap_or_else(|| panic!("the quoted user agent is missing: {patterns:#?}"));
    assert!(
        quoted.contains("\\\\"),
        "the backslash is not escaped: {quoted}"
    );
    for indicator in of_type("indicator") {
        assert!(identity_ids.contains(indicator["created_by_ref"].as_str().unwrap()));
        assert!(indicator["valid_until"].as_str() > indicator["valid_from"].as_str());
    }

    // indicates → the class's attack pattern, with its CAPEC id.
    let sqli_pattern = of_type("attack-pattern")
        .into_iter()
        .find(|a| a["name"] == "SQL injection")
        .unwrap();
    assert_eq!(
        sqli_pattern["external_references"][0],
        json!({"source_name": "capec", "external_id": "CAPEC-66"})
    );
    let relationships = of_type("relationship");
    assert_eq!(relationships.len(), of_type("indicator").len());
    assert_eq!(
        relationships
            .iter()
            .filter(|r| r["target_ref"] == sqli_pattern["id"])
            .count(),
        3,
        "the sqli report has three indicators (address, user agent, payload)"
    );
    for relationship in &relationships {
        assert_eq!(relationship["relationship_type"], "indicates");
        assert!(ids_in_bundle.contains(relationship["source_ref"].as_str().unwrap()));
        assert!(ids_in_bundle.contains(relationship["target_ref"].as_str().unwrap()));
    }

    // The cursor continues after the export: nothing new yet.
    let next = json_of(get(&setup, Some(&key), &format!("/v1/stix?after={cursor}")).await).await;
    assert_eq!(next["objects"], json!([]));
    assert_eq!(get(&setup, None, "/v1/stix").await.status(), 401);
    setup.hub.shutdown().await;
}

#[tokio::test]
async fn a_rest_consumer_resumes_from_its_own_cursor() {
    let setup = viewkit::start().await;
    let (_, gamma_key) = viewkit::register(
        &setup.client,
        &setup.base,
        json!({"name": "gamma", "organisation": "Gamma", "subscription": {"classes": ["xss"]}}),
    )
    .await;
    let published = viewkit::publish_all(&setup).await;

    // Beta walks two at a time, keeping its cursor.
    let mut cursor = "0".to_owned();
    let mut seen = Vec::new();
    loop {
        let page = json_of(
            get(
                &setup,
                Some(&setup.beta_key),
                &format!("/v1/reports?after={cursor}&limit=2"),
            )
            .await,
        )
        .await;
        let reports = page["reports"].as_array().unwrap();
        assert!(reports.len() <= 2);
        cursor = page["cursor"].as_str().unwrap().to_owned();
        if reports.is_empty() {
            break;
        }
        seen.extend(reports.iter().map(|r| r["id"].as_str().unwrap().to_owned()));
    }
    assert_eq!(
        seen, published,
        "pages in order, nothing twice, nothing missed"
    );

    // A new report: resuming from the saved cursor gets it and only it.
    let new_id = viewkit::ingest(
        &setup,
        &setup.alpha_key,
        &json!({"attack": "xss", "source_ip": "203.0.113.200"}),
    )
    .await;
    let deadline = std::time::Instant::now() + std::time::Duration::from_secs(60);
    let resumed = loop {
        let page = json_of(
            get(
                &setup,
                Some(&setup.beta_key),
                &format!("/v1/reports?after={cursor}"),
            )
            .await,
        )
        .await;
        if !page["reports"].as_array().unwrap().is_empty() {
            break page;
        }
        assert!(
            std::time::Instant::now() < deadline,
            "the new report never came"
        );
        tokio::time::sleep(std::time::Duration::from_millis(200)).await;
    };
    assert_eq!(resumed["reports"].as_array().unwrap().len(), 1);
    assert_eq!(resumed["reports"][0]["id"], new_id.as_str());
    // Canonical reports only: nothing of the raw report or of the reporter.
    let text = resumed.to_string();
    assert!(!text.contains("secretbank") && !text.contains(&setup.alpha_id));

    // Gamma's subscription (xss only) filters the same walk.
    let gamma = json_of(get(&setup, Some(&gamma_key), "/v1/reports?limit=500").await).await;
    let classes: Vec<&str> = gamma["reports"]
        .as_array()
        .unwrap()
        .iter()
        .map(|r| r["category"]["class"].as_str().unwrap())
        .collect();
    assert_eq!(classes, ["xss", "xss"]);

    for bad in ["after=yesterday", "after=1-2-3", "limit=0", "limit=100000"] {
        let response = get(&setup, Some(&setup.beta_key), &format!("/v1/reports?{bad}")).await;
        assert_eq!(response.status(), 400, "{bad}");
        assert!(json_of(response).await["error"].as_str().is_some());
    }
    assert_eq!(get(&setup, None, "/v1/reports").await.status(), 401);
    assert_eq!(
        get(&setup, Some("ahk_wrong"), "/v1/reports").await.status(),
        401
    );
    setup.hub.shutdown().await;
}

#[tokio::test]
async fn taxii_pages_filters_and_refuses_writes() {
    let setup = viewkit::start().await;
    viewkit::publish_all(&setup).await;
    let key = setup.beta_key.clone();
    let collections = "/taxii2/api/collections/";

    // Authentication: Basic with the key as password, or Bearer; 401 asks for Basic.
    let response = get(&setup, None, "/taxii2/").await;
    assert_eq!(response.status(), 401);
    assert!(
        response.headers()["www-authenticate"]
            .to_str()
            .unwrap()
            .starts_with("Basic")
    );
    assert_eq!(
        response.headers()["content-type"],
        "application/taxii+json;version=2.1"
    );
    assert_eq!(json_of(response).await["http_status"], "401");
    let discovery = get(&setup, Some(&key), "/taxii2/").await;
    assert_eq!(discovery.status(), 200);
    assert_eq!(
        discovery.headers()["content-type"],
        "application/taxii+json;version=2.1"
    );
    let discovery = json_of(discovery).await;
    assert_eq!(
        discovery["api_roots"],
        json!([format!("{}/taxii2/api/", setup.base)])
    );
    let bearer = setup
        .client
        .get(format!("{}/taxii2/api/", setup.base))
        .bearer_auth(&key)
        .send()
        .await
        .unwrap();
    assert_eq!(bearer.status(), 200);
    let wrong_accept = setup
        .client
        .get(format!("{}/taxii2/api/", setup.base))
        .basic_auth("consumer", Some(&key))
        .header("accept", "application/taxii+json;version=2.0")
        .send()
        .await
        .unwrap();
    assert_eq!(wrong_accept.status(), 406);

    let listed = json_of(get(&setup, Some(&key), collections).await).await;
    let collection = &listed["collections"][0];
    assert_eq!(collection["can_read"], true);
    assert_eq!(collection["can_write"], false);
    let objects_path = format!(
        "{collections}{}/objects/",
        collection["id"].as_str().unwrap()
    );

    // Page through with limit 5: pages never exceed it, never repeat within themselves,
    // `X-TAXII-Date-Added-*` frame each page, and the manifest walks the same objects.
    let walk = |what: &'static str| {
        let setup = &setup;
        let key = key.clone();
        let base_path = objects_path.replace("/objects/", &format!("/{what}/"));
        async move {
            let mut all = Vec::new();
            let mut next: Option<String> = None;
            let mut pages = 0;
            loop {
                let mut path = format!("{base_path}?limit=5");
                if let Some(next) = &next {
                    path.push_str(&format!("&next={next}"));
                }
                let response = get(setup, Some(&key), &path).await;
                assert_eq!(response.status(), 200);
                let first = response
                    .headers()
                    .get("x-taxii-date-added-first")
                    .map(|v| v.to_str().unwrap().to_owned());
                let last = response
                    .headers()
                    .get("x-taxii-date-added-last")
                    .map(|v| v.to_str().unwrap().to_owned());
                let page = json_of(response).await;
                let items = page["objects"].as_array().cloned().unwrap_or_default();
                assert!(items.len() <= 5);
                let unique: HashSet<String> = items.iter().map(|o| o["id"].to_string()).collect();
                assert_eq!(unique.len(), items.len());
                if !items.is_empty() {
                    assert!(first.is_some() && first <= last, "{first:?} {last:?}");
                }
                pages += 1;
                all.extend(items);
                if page["more"] != true {
                    break;
                }
                next = Some(page["next"].as_str().unwrap().to_owned());
            }
            (all, pages)
        }
    };
    let (objects, pages) = walk("objects").await;
    let (manifest, _) = walk("manifest").await;
    assert!(pages >= 10, "{pages} pages");
    assert_eq!(
        manifest.iter().map(|m| &m["id"]).collect::<Vec<_>>(),
        objects.iter().map(|o| &o["id"]).collect::<Vec<_>>()
    );
    assert_eq!(
        objects
            .iter()
            .filter(|o| o["type"] == "attack-pattern")
            .count(),
        21
    );
    assert_eq!(
        objects.iter().filter(|o| o["type"] == "sighting").count(),
        6,
        "one sighting per promoted report (the route-only report is never promoted)"
    );

    // added_after: only what was added later (the reports, not the 2024 catalogue).
    let later = json_of(
        get(
            &setup,
            Some(&key),
            &format!("{objects_path}?added_after=2025-01-01T00:00:00Z&limit=1000"),
        )
        .await,
    )
    .await;
    let later = later["objects"].as_array().unwrap();
    assert!(!later.is_empty() && later.iter().all(|o| o["type"] != "attack-pattern"));
    let future = json_of(
        get(
            &setup,
            Some(&key),
            &format!("{objects_path}?added_after=2999-01-01T00:00:00Z"),
        )
        .await,
    )
    .await;
    assert_eq!(future, json!({"more": false}));

    // match[type] and match[id].
    let indicators = json_of(
        get(
            &setup,
            Some(&key),
            &format!("{objects_path}?match[type]=indicator&limit=1000"),
        )
        .await,
    )
    .await;
    let indicators = indicators["objects"].as_array().unwrap();
    assert_eq!(indicators.len(), 10);
    assert!(indicators.iter().all(|o| o["type"] == "indicator"));

    // Every object can be fetched by id, with its one version.
    for object in &objects {
        let id = object["id"].as_str().unwrap();
        let one = json_of(get(&setup, Some(&key), &format!("{objects_path}{id}/")).await).await;
        assert_eq!(one["objects"], json!([object]), "{id}");
        let versions =
            json_of(get(&setup, Some(&key), &format!("{objects_path}{id}/versions/")).await).await;
        assert_eq!(versions["versions"], json!([object["modified"]]));
    }
    let missing = get(
        &setup,
        Some(&key),
        &format!("{objects_path}indicator--00000000-0000-4000-8000-000000000000/"),
    )
    .await;
    assert_eq!(missing.status(), 404);

    // Read-only: writes are refused; no status exists; unknown collections are 404.
    let post = setup
        .client
        .post(format!("{}{objects_path}", setup.base))
        .basic_auth("consumer", Some(&key))
        .header("content-type", "application/taxii+json;version=2.1")
        .body(r#"{"objects": []}"#)
        .send()
        .await
        .unwrap();
    assert_eq!(post.status(), 403);
    assert_eq!(json_of(post).await["http_status"], "403");
    let delete = setup
        .client
        .delete(format!(
            "{}{objects_path}{}/",
            setup.base,
            objects[0]["id"].as_str().unwrap()
        ))
        .basic_auth("consumer", Some(&key))
        .send()
        .await
        .unwrap();
    assert_eq!(delete.status(), 403);
    assert_eq!(
        get(&setup, Some(&key), "/taxii2/api/status/some-id/")
            .await
            .status(),
        404
    );
    assert_eq!(
        get(&setup, Some(&key), &format!("{collections}nope/objects/"))
            .await
            .status(),
        404
    );
    for bad in ["next=garbage", "added_after=yesterday", "limit=x"] {
        assert_eq!(
            get(&setup, Some(&key), &format!("{objects_path}?{bad}"))
                .await
                .status(),
            400,
            "{bad}"
        );
    }
    setup.hub.shutdown().await;
}

#[tokio::test]
async fn the_views_work_on_postgresql() {
    if !apiguard_testkit::require_service("PostgreSQL", viewkit::POSTGRES) {
        return;
    }
    let (store, schema) = viewkit::postgres_store().await;
    let setup = viewkit::start_on(Some(store)).await;
    let published = viewkit::publish_all(&setup).await;
    let page = json_of(get(&setup, Some(&setup.beta_key), "/v1/reports?limit=3").await).await;
    let first: Vec<&str> = page["reports"]
        .as_array()
        .unwrap()
        .iter()
        .map(|r| r["id"].as_str().unwrap())
        .collect();
    assert_eq!(first, published[..3]);
    let cursor = page["cursor"].as_str().unwrap();
    let rest = json_of(
        get(
            &setup,
            Some(&setup.beta_key),
            &format!("/v1/reports?after={cursor}&limit=100"),
        )
        .await,
    )
    .await;
    assert_eq!(
        rest["reports"].as_array().unwrap().len(),
        published.len() - 3
    );
    let collection = json_of(
        get(
            &setup,
            Some(&setup.beta_key),
            &format!(
                "/taxii2/api/collections/{}/objects/?match[type]=sighting",
                apiguard_hub::taxii::COLLECTION_ID
            ),
        )
        .await,
    )
    .await;
    assert_eq!(
        collection["objects"].as_array().unwrap().len(),
        published.len()
    );
    setup.hub.shutdown().await;
    schema.drop().await;
}

/// A SQLite store made before `published_at` existed: opening it adds the column, and the
/// reports it had published appear in the views (stamped with their receipt time).
#[tokio::test]
async fn an_older_store_is_migrated_and_its_published_reports_are_visible() {
    use apiguard_hub::views::{Cursor, published_after};
    use apiguard_model::threat::{
        ActionTaken, AttackClass, Category, Indicators, ThreatReport, ThreatSeverity, Trust,
    };

    let dir = tempfile::tempdir().unwrap();
    let url = format!("sqlite://{}?mode=rwc", dir.path().join("old.db").display());
    let old = sqlx::SqlitePool::connect(&url).await.unwrap();
    sqlx::query(
        "CREATE TABLE hub_reports (seq INTEGER PRIMARY KEY AUTOINCREMENT, \
         id TEXT NOT NULL UNIQUE, participant_id TEXT NOT NULL, ip TEXT, class TEXT NOT NULL, \
         severity TEXT NOT NULL, received_at BIGINT NOT NULL, valid_until BIGINT NOT NULL, \
         body TEXT NOT NULL, published BIGINT NOT NULL DEFAULT 0)",
    )
    .execute(&old)
    .await
    .unwrap();
    let then = chrono::Utc::now() - chrono::Duration::minutes(5);
    let report = |published: i64| {
        let report = ThreatReport {
            schema_version: 1,
            id: uuid::Uuid::now_v7(),
            first_seen: then,
            last_seen: then,
            count: 1,
            category: Category::of(AttackClass::Xss),
            severity: ThreatSeverity::Low,
            confidence: 50,
            indicators: Indicators {
                ip: Some("203.0.113.9".parse().unwrap()),
                ..Default::default()
            },
            action: ActionTaken::Blocked,
            valid_until: then + chrono::Duration::hours(1),
            reporter: format!("anon-{}", "1".repeat(32)),
            trust: Trust {
                score: 50,
                corroborations: 1,
            },
        };
        (report, published)
    };
    let rows = [report(1), report(0)];
    for (report, published) in &rows {
        sqlx::query(
            "INSERT INTO hub_reports (id, participant_id, ip, class, severity, received_at, \
             valid_until, body, published) VALUES ($1, 'p', '203.0.113.9', 'xss', 'low', $2, $3, $4, $5)",
        )
        .bind(report.id.to_string())
        .bind(then.timestamp_millis())
        .bind(report.valid_until.timestamp_millis())
        .bind(String::from_utf8(report.to_json()).unwrap())
        .bind(published)
        .execute(&old)
        .await
        .unwrap();
    }
    old.close().await;

    let store = apiguard_hub::Store::connect(&url).await.unwrap();
    let visible = published_after(&store, Cursor::default(), 10)
        .await
        .unwrap();
    assert_eq!(visible.len(), 1, "only the published report");
    assert_eq!(visible[0].report.id, rows[0].0.id);
    assert_eq!(visible[0].cursor.published_at, then.timestamp_millis());
    store.close().await;
}

/// A consumer away for longer than `limits.feed_retention` comes back with a position whose
/// next items were pruned: REST and TAXII refuse it with a clear, stable error instead of
/// answering from the oldest item kept as if nothing were missing.
#[tokio::test]
async fn positions_before_the_pruned_part_of_the_log_are_refused() {
    let setup = viewkit::start().await;
    let published = viewkit::publish_all(&setup).await.len() as i64;
    let key = setup.beta_key.clone();
    let objects = format!(
        "/taxii2/api/collections/{}/objects/",
        apiguard_hub::taxii::COLLECTION_ID
    );
    let manifest = objects.replace("/objects/", "/manifest/");

    // Positions taken before the pruning: a REST cursor part-way, a TAXII `next` token on a
    // report (past the attack-pattern catalogue, dated 2024-01-01), an old `added_after`.
    let page = json_of(get(&setup, Some(&key), "/v1/reports?limit=2").await).await;
    let cursor = page["cursor"].as_str().unwrap().to_owned();
    let since_2024 = "added_after=2024-01-01T00:00:00.000Z";
    let taxii_page = json_of(
        get(
            &setup,
            Some(&key),
            &format!("{objects}?{since_2024}&limit=2"),
        )
        .await,
    )
    .await;
    assert_eq!(taxii_page["more"], true, "{taxii_page}");
    let next = taxii_page["next"].as_str().unwrap().to_owned();

    // Everything so far passes the retention (pruned as the sweep would), then more comes.
    let pruned = setup
        .hub
        .state()
        .pipeline
        .store
        .prune_feed(chrono::Utc::now() + chrono::Duration::seconds(1))
        .await
        .unwrap();
    assert!(pruned as i64 >= published, "{pruned} pruned");
    let fresh = viewkit::ingest(
        &setup,
        &setup.alpha_key,
        &json!({"attack": "xss", "source_ip": "203.0.113.201"}),
    )
    .await;
    let kept = viewkit::wait_visible(&setup, &key, 1).await;
    assert_eq!(kept.len(), 1, "only the new report is kept");
    assert_eq!(kept[0]["id"], fresh.as_str());

    // REST and its STIX twin: 410 with a problem document and a stable code.
    for path in [
        format!("/v1/reports?after={cursor}"),
        format!("/v1/stix?after={cursor}"),
    ] {
        let response = get(&setup, Some(&key), &path).await;
        assert_eq!(response.status(), 410, "{path}");
        assert_eq!(
            response.headers()["content-type"],
            "application/problem+json"
        );
        let problem = json_of(response).await;
        assert_eq!(problem["code"], "FEED_CURSOR_EXPIRED", "{problem}");
        assert_eq!(problem["status"], 410);
        assert!(
            problem["pruned_through"].as_i64().unwrap() >= published,
            "{problem}"
        );
        assert!(
            problem["detail"].as_str().unwrap().contains("after=0"),
            "the error says how to go on: {problem}"
        );
    }
    // Starting again from 0 gets what is kept; a cursor taken now goes on normally.
    let restart = json_of(get(&setup, Some(&key), "/v1/reports?after=0").await).await;
    assert_eq!(restart["reports"][0]["id"], fresh.as_str());
    let now_cursor = restart["cursor"].as_str().unwrap();
    let response = get(
        &setup,
        Some(&key),
        &format!("/v1/reports?after={now_cursor}"),
    )
    .await;
    assert_eq!(response.status(), 200);
    assert_eq!(json_of(response).await["reports"], json!([]));

    // TAXII: the old `next` token and the old `added_after`, on objects and on the manifest.
    for path in [
        format!("{objects}?next={next}"),
        format!("{manifest}?next={next}"),
        format!("{objects}?{since_2024}"),
        format!("{manifest}?{since_2024}"),
    ] {
        let response = get(&setup, Some(&key), &path).await;
        assert_eq!(response.status(), 410, "{path}");
        assert_eq!(
            response.headers()["content-type"],
            "application/taxii+json;version=2.1"
        );
        let error = json_of(response).await;
        assert_eq!(error["http_status"], "410", "{error}");
        assert_eq!(error["error_code"], "FEED_CURSOR_EXPIRED", "{error}");
        assert!(error["title"].as_str().is_some() && error["description"].as_str().is_some());
    }
    // Without a position, or with an `added_after` past the pruned part, TAXII answers.
    let all = json_of(get(&setup, Some(&key), &objects).await).await;
    assert!(
        all["objects"]
            .as_array()
            .unwrap()
            .iter()
            .any(|o| o["type"] == "indicator"),
        "{all}"
    );
    let recent = chrono::Utc::now() - chrono::Duration::milliseconds(100);
    let response = get(
        &setup,
        Some(&key),
        &format!(
            "{objects}?added_after={}",
            recent.format("%Y-%m-%dT%H:%M:%S%.3fZ")
        ),
    )
    .await;
    assert_eq!(response.status(), 200);
    setup.hub.shutdown().await;
}
