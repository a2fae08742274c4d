using GpuExecutor.AdminLog;
using GpuExecutor.Configuration;
using GpuExecutor.Outcomes;
using GpuExecutor.Protocol;

namespace GpuExecutor.Tests;

public sealed class AdminLogTests : IDisposable
{
    private readonly string _stateDir = Directory.CreateTempSubdirectory("gpu-executor-admin-log").FullName;

    public void Dispose() => Directory.Delete(_stateDir, recursive: true);

    private static AdminEvent Event(long job, string verb = "prepare", DateTimeOffset? time = null) =>
        new() { Time = time ?? DateTimeOffset.UtcNow, Verb = verb, Job = job, Outcome = "success", Version = "0.0.0", Host = "h" };

    [Fact]
    public void Lines_are_appended_and_read_back_in_order_across_rotations_and_the_oldest_file_goes()
    {
        // A tiny limit: each line rotates the file, so the kept files hold the newest lines only.
        for (var job = 1; job <= EventLog.KeptFiles + 3; job++)
            Assert.True(EventLog.TryAppend(_stateDir, Event(job), maxBytes: 50));

        var jobs = EventLog.ReadAll(_stateDir).Select(record => record.Job).ToList();
        Assert.Equal(Enumerable.Range(3, EventLog.KeptFiles + 1).Select(job => (long?)job), jobs);
        Assert.False(File.Exists(EventLog.PathOf(_stateDir) + "." + (EventLog.KeptFiles + 1)));
    }

    [Fact]
    public void A_torn_line_is_skipped_and_an_unwritable_state_dir_loses_the_line_without_throwing()
    {
        EventLog.TryAppend(_stateDir, Event(1));
        File.AppendAllText(EventLog.PathOf(_stateDir), "{\"time\":\"2026-");
        EventLog.TryAppend(_stateDir, Event(2));
        // The torn tail and the next line share a line; that line is lost, the others stay.
        Assert.Equal([1L], EventLog.ReadAll(_stateDir).Select(record => record.Job!.Value));

        var blocker = Path.Combine(_stateDir, "file");
        File.WriteAllText(blocker, "");
        Assert.False(EventLog.TryAppend(Path.Combine(blocker, "state"), Event(3)));
    }

    [Fact]
    public async Task Follow_yields_lines_appended_after_it_started_and_goes_on_after_a_rotation()
    {
        EventLog.TryAppend(_stateDir, Event(1));
        using var stop = new CancellationTokenSource(TimeSpan.FromSeconds(20));
        var seen = new List<long>();
        var following = Task.Run(async () =>
        {
            await foreach (var record in EventLog.FollowAsync(_stateDir, TimeSpan.FromMilliseconds(20), stop.Token))
            {
                seen.Add(record.Job!.Value);
                if (seen.Count == 3)
                    break;
            }
        }, TestContext.Current.CancellationToken);

        await Task.Delay(100, TestContext.Current.CancellationToken);
        EventLog.TryAppend(_stateDir, Event(2));
        await Task.Delay(100, TestContext.Current.CancellationToken);
        EventLog.TryAppend(_stateDir, Event(3), maxBytes: 1);
        await Task.Delay(100, TestContext.Current.CancellationToken);
        EventLog.TryAppend(_stateDir, Event(4));
        await following;

        Assert.Equal([2L, 3L, 4L], seen);
    }

    [Fact]
    public void Secrets_of_the_config_and_the_jobs_masked_variables_are_redacted_and_short_values_are_not()
    {
        var config = ConfigLoader.Parse("""
            [continuation]
            gitlab_url = "https://gitlab.example.com"
            token = "glpat-continuation-secret"
            [stores.s3]
            type = "s3"
            access_key_id = "AKIAEXAMPLEKEY"
            secret_access_key = "wJalrXUtnFEMI/secret"
            """, "test.toml");
        var payload = new JobPayload
        {
            Token = "job-token-abcdef",
            Variables =
            [
                new JobVariable { Key = "API_KEY", Value = "masked-value-1234", Masked = true },
                new JobVariable { Key = "MLFLOW_TRACKING_TOKEN", Value = "glpat-mlflow-9999" },
                new JobVariable { Key = "SHORT", Value = "on", Masked = true },
                new JobVariable { Key = "PUBLIC", Value = "visible-value" },
            ],
        };
        var redaction = SecretRedaction.For(config, payload);

        var text = redaction.Redact("job-token-abcdef glpat-continuation-secret AKIAEXAMPLEKEY wJalrXUtnFEMI/secret masked-value-1234 glpat-mlflow-9999 on visible-value");

        Assert.Equal("[MASKED] [MASKED] [MASKED] [MASKED] [MASKED] [MASKED] on visible-value", text);
        Assert.Null(redaction.Redact(null));
    }

    [Theory]
    [InlineData("90s", 90)]
    [InlineData("30m", 1800)]
    [InlineData("1h", 3600)]
    [InlineData("2d", 172800)]
    [InlineData("1.5h", 5400)]
    public void Since_takes_a_span_back_from_now(string text, double seconds)
    {
        var now = new DateTimeOffset(2026, 12, 1, 12, 0, 0, TimeSpan.Zero);
        Assert.Equal(now.AddSeconds(-seconds), EventFilter.ParseSince(text, now));
    }

    [Fact]
    public void Since_takes_a_time_and_refuses_anything_else_and_the_filter_matches_job_and_time()
    {
        var now = new DateTimeOffset(2026, 12, 1, 12, 0, 0, TimeSpan.Zero);
        Assert.Equal(new DateTimeOffset(2026, 12, 1, 6, 0, 0, TimeSpan.Zero), EventFilter.ParseSince("2026-12-01T06:00:00Z", now));
        Assert.Throws<SystemFailureException>(() => EventFilter.ParseSince("yesterday", now));
        Assert.Throws<SystemFailureException>(() => EventFilter.ParseSince("-1h", now));

        var filter = new EventFilter(7, now.AddHours(-1));
        Assert.True(filter.Matches(Event(7, time: now)));
        Assert.False(filter.Matches(Event(8, time: now)));
        Assert.False(filter.Matches(Event(7, time: now.AddHours(-2))));
    }

    [Fact]
    public void A_line_for_a_terminal_carries_the_stage_the_figures_and_the_message_on_one_line()
    {
        var line = EventFilter.Format(Event(5, "run") with
        {
            Stage = "build_script",
            Outcome = "build_failure",
            DurationMs = 1234,
            ScriptExitCode = 3,
            Gpus = ["GPU-a", "GPU-b"],
            Datasets = new DatasetFigures(10, 4, 6 * 1048576, 10 * 1048576, true),
            Checkpoint = new CheckpointFigures(42, null),
            Message = "two\nlines",
        });

        Assert.Contains("run build_script  job 5  build_failure  1234 ms", line);
        Assert.Contains("gpus GPU-a,GPU-b", line);
        Assert.Contains("datasets 10 objects, 6.0 MiB fetched, 4 cached, streaming", line);
        Assert.Contains("restored generation 42", line);
        Assert.Contains("script exit 3", line);
        Assert.EndsWith("two lines", line);
    }
}
