use super::*;
use proptest::prelude::*;

fn limit(ms: u64, max: Option<u32>) -> Limit {
    Limit {
        period: Duration::from_millis(ms),
        max_requests: max,
        text: format!("{ms}ms"),
    }
}

/// Grants `arrivals` (offsets in ms, ascending) one after the other, as a client does: a request
/// waits for its slot, and the next one cannot start before the previous was granted.
fn grant_all(limits: &[Limit], arrivals: &[u64]) -> Vec<Duration> {
    let base = Instant::now();
    let mut l = RequestLimits::new(limits);
    let mut grants = Vec::new();
    let mut now = base;
    for &a in arrivals {
        now = now.max(base + Duration::from_millis(a));
        let mut waits = 0;
        while let Err((wait, _)) = l.try_acquire(now) {
            assert!(!wait.is_zero(), "a refusal must say how long to wait");
            now += wait;
            waits += 1;
            assert!(waits < 10, "a wait must end in a grant, not a loop");
        }
        grants.push(now - base);
    }
    grants
}

/// The largest number of grants in any half-open span `[g, g + period)` starting at a grant
/// (a maximal span always starts at one).
fn busiest(grants: &[Duration], period: Duration) -> usize {
    grants
        .iter()
        .map(|&g| grants.iter().filter(|&&x| x >= g && x < g + period).count())
        .max()
        .unwrap_or(0)
}

proptest! {
    #[test]
    fn no_window_ever_holds_more_than_its_limit(
        limits in proptest::collection::vec((1u64..5_000, prop_oneof![Just(None), (1u32..20).prop_map(Some)]), 1..4),
        gaps in proptest::collection::vec(0u64..400, 1..120),
    ) {
        let limits: Vec<Limit> = limits.into_iter().map(|(ms, max)| limit(ms, max)).collect();
        let arrivals: Vec<u64> = gaps.iter().scan(0, |t, g| { *t += g; Some(*t) }).collect();
        let grants = grant_all(&limits, &arrivals);
        prop_assert_eq!(grants.len(), arrivals.len());
        for l in &limits {
            if let Some(max) = l.max_requests {
                prop_assert!(busiest(&grants, l.period) <= max as usize, "{} broken: {:?}", l, grants);
            }
        }
        // Never granted before the request arrived.
        for (g, a) in grants.iter().zip(&arrivals) {
            prop_assert!(*g >= Duration::from_millis(*a));
        }
    }

    #[test]
    fn unlimited_and_roomy_limits_never_delay(gaps in proptest::collection::vec(0u64..50, 1..50)) {
        let limits = [limit(1_000, None), limit(60_000, Some(1_000))];
        let arrivals: Vec<u64> = gaps.iter().scan(0, |t, g| { *t += g; Some(*t) }).collect();
        let grants = grant_all(&limits, &arrivals);
        for (g, a) in grants.iter().zip(&arrivals) {
            prop_assert_eq!(*g, Duration::from_millis(*a));
        }
    }
}

#[test]
fn back_to_back_requests_get_the_full_rate_and_no_more() {
    // 5 per second, 30 requests at once: 5 at t=0, 5 at t=1 s, ... 5 at t=5 s.
    let grants = grant_all(&[limit(1_000, Some(5))], &[0; 30]);
    let seconds: Vec<u64> = grants
        .iter()
        .map(|g| g.as_millis() as u64 / 1_000)
        .collect();
    for s in 0..6 {
        assert_eq!(seconds.iter().filter(|&&x| x == s).count(), 5, "{grants:?}");
    }
    assert_eq!(*grants.last().unwrap(), Duration::from_secs(5));
}

#[test]
fn several_limits_all_hold() {
    // 3 per second and 4 per 10 seconds: the fourth request waits for the long window.
    let grants = grant_all(&[limit(1_000, Some(3)), limit(10_000, Some(4))], &[0; 6]);
    let ms: Vec<u128> = grants.iter().map(Duration::as_millis).collect();
    assert_eq!(ms, [0, 0, 0, 1_000, 10_000, 10_000]);
}

#[test]
fn a_huge_limit_keeps_few_buckets() {
    let mut l = RequestLimits::new(&[limit(3_600_000, Some(9_999_999))]);
    let base = Instant::now();
    for i in 0..100_000u64 {
        l.record(base + Duration::from_millis(i * 10));
    }
    let w = &l.windows[0];
    assert_eq!(w.count, 100_000);
    assert!(w.buckets.len() <= 1_001, "{} buckets", w.buckets.len());
}

#[tokio::test(start_paused = true)]
async fn input_limits_are_shared_and_service_limits_are_not() {
    // The input allows 4 per second for both services; each service allows itself 3.
    let input = Arc::new(Mutex::new(RequestLimits::new(&[limit(1_000, Some(4))])));
    let base = Instant::now();
    let mut tasks = Vec::new();
    for _ in 0..2 {
        let own = Arc::new(Mutex::new(RequestLimits::new(&[limit(1_000, Some(3))])));
        let limits = SharedLimits::default()
            .with("input", input.clone())
            .with("service", own);
        tasks.push(tokio::spawn(async move {
            let mut grants = Vec::new();
            for _ in 0..9 {
                limits.acquire().await;
                grants.push(Instant::now() - base);
            }
            grants
        }));
    }
    let mut all = Vec::new();
    for t in tasks {
        let grants = t.await.unwrap();
        assert!(busiest(&grants, Duration::from_secs(1)) <= 3, "{grants:?}");
        all.extend(grants);
    }
    all.sort();
    assert!(busiest(&all, Duration::from_secs(1)) <= 4, "{all:?}");
    // 18 requests at 4 per second: the last one in the fifth second, not later.
    assert_eq!(all.last().unwrap().as_secs(), 4, "{all:?}");
}

#[test]
fn an_unlimited_level_is_left_out() {
    let none = Arc::new(Mutex::new(RequestLimits::new(&[limit(1_000, None)])));
    assert!(SharedLimits::default().with("input", none).is_empty());
}
