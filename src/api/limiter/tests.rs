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

/// A huge limit keeps at most ~1,000 buckets, and still forgets what left the window: after
/// two hours of a request every 10 ms, an hour's window counts the last hour's requests only.
#[test]
fn a_huge_limit_keeps_few_buckets_and_forgets_the_old_ones() {
    let mut l = RequestLimits::new(&[limit(3_600_000, Some(9_999_999))]);
    let base = Instant::now();
    let requests = 720_000u64;
    for i in 0..requests {
        l.record(base + Duration::from_millis(i * 10));
    }
    let last = base + Duration::from_millis((requests - 1) * 10);
    assert_eq!(l.wait(last).0, Duration::ZERO);
    let w = &l.windows[0];
    assert!(w.buckets.len() <= 1_001, "{} buckets", w.buckets.len());
    // 360,000 requests in the last hour, over-estimated by at most one bucket (3.6 s: 360).
    assert!(
        (360_000..=360_360).contains(&w.count),
        "the window counts {} requests for the last hour's 360,000",
        w.count
    );
}

/// Regression (issue 20 §5): requests closer together than a bucket's width used to chain into
/// one bucket that never closed, so nothing ever left the window: once it held the limit, the
/// next request waited a whole period from the newest one, although the last period had seen
/// far fewer. Here 5,000 per 1,000 s (buckets of 1 s) and a request every 0.5 s: at most 2,000
/// in any period, so no request may wait longer than one bucket's width, for over an hour.
#[tokio::test(start_paused = true)]
async fn steady_requests_below_the_limit_never_wait_long() {
    let own = RequestLimits::new(&[limit(1_000_000, Some(5_000))]);
    let limits = SharedLimits::default().with("service", Arc::new(Mutex::new(own)));
    let started = Instant::now();
    let (mut worst, mut waited_at) = (Duration::ZERO, 0);
    for i in 0..8_000 {
        let asked = Instant::now();
        limits.acquire().await;
        if asked.elapsed() > worst {
            (worst, waited_at) = (asked.elapsed(), i);
        }
        tokio::time::sleep(Duration::from_millis(500)).await;
    }
    assert!(
        worst <= Duration::from_secs(1),
        "request {waited_at} waited {worst:?} below the limit"
    );
    assert!(started.elapsed() <= Duration::from_secs(4_001));
}

/// After a burst that fills the window, requests are granted again as soon as the burst leaves
/// it, and steady traffic below the limit goes on without waits after that.
#[tokio::test(start_paused = true)]
async fn the_window_is_live_again_after_saturation() {
    let own = RequestLimits::new(&[limit(1_000_000, Some(3_000))]);
    let limits = SharedLimits::default().with("service", Arc::new(Mutex::new(own)));
    let started = Instant::now();
    for _ in 0..3_000 {
        limits.acquire().await;
    }
    assert_eq!(
        started.elapsed(),
        Duration::ZERO,
        "the burst fits the limit"
    );
    limits.acquire().await;
    let live_again = started.elapsed();
    assert!(
        live_again <= Duration::from_secs(1_001),
        "the first request after the burst waited {live_again:?}"
    );
    let mut worst = Duration::ZERO;
    for _ in 0..6_000 {
        tokio::time::sleep(Duration::from_millis(500)).await;
        let asked = Instant::now();
        limits.acquire().await;
        worst = worst.max(asked.elapsed());
    }
    assert!(
        worst <= Duration::from_secs(1),
        "a request waited {worst:?}"
    );
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
