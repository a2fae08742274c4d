using System.Net;
using GpuExecutor.Checkpoints;
using GpuExecutor.Configuration;
using GpuExecutor.Continuation;
using GpuExecutor.Outcomes;
using GpuExecutor.Storage;

namespace GpuExecutor.Tests;

public sealed class GitLabClientTests
{
    private const string Token = "glpat-unit-test-token-123";

    [Fact]
    public async Task Reads_a_job_and_retries_it_with_the_token_in_its_header()
    {
        using var gitLab = new FakeGitLab(Token) { NextJobId = 501 };
        gitLab.AddJob(42, 500, "train", "failed");
        using var client = new GitLabClient(new Uri(gitLab.Url), new Secret(Token), _ => { });

        var job = await client.GetJobAsync(42, 500, TestContext.Current.CancellationToken);
        var retried = await client.RetryJobAsync(42, 500, TestContext.Current.CancellationToken);

        Assert.Equal((500, "failed", "train"), (job.Id, job.Status, job.Name));
        Assert.True(job.HasEnded);
        Assert.Equal((501, "pending", "train"), (retried.Id, retried.Status, retried.Name));
        Assert.False(retried.HasEnded);
        Assert.Equal([(500L, 501L)], gitLab.Retries);
        Assert.Equal(["GET /api/v4/projects/42/jobs/500", "POST /api/v4/projects/42/jobs/500/retry"], gitLab.Requests);
    }

    [Fact]
    public async Task A_refused_token_is_a_clear_error_that_never_shows_the_token()
    {
        using var gitLab = new FakeGitLab("some-other-token");
        gitLab.AddJob(42, 500, "train", "failed");
        var log = new List<string>();
        using var client = new GitLabClient(new Uri(gitLab.Url), new Secret(Token), log.Add);

        var error = await Assert.ThrowsAsync<GitLabApiException>(() => client.RetryJobAsync(42, 500, TestContext.Current.CancellationToken));

        Assert.Equal(HttpStatusCode.Unauthorized, error.Status);
        Assert.False(error.Transient);
        Assert.Contains("401", error.Message);
        Assert.DoesNotContain(Token, error.Message);
        // Not transient: asked once, not six times.
        Assert.Equal(1, gitLab.UnauthorizedRequests);
        Assert.Empty(log);
    }

    [Fact]
    public async Task A_job_that_has_not_ended_is_not_retryable()
    {
        using var gitLab = new FakeGitLab(Token);
        gitLab.AddJob(42, 500, "train", "running");
        using var client = new GitLabClient(new Uri(gitLab.Url), new Secret(Token), _ => { });

        var error = await Assert.ThrowsAsync<GitLabApiException>(() => client.RetryJobAsync(42, 500, TestContext.Current.CancellationToken));

        Assert.Equal(HttpStatusCode.Forbidden, error.Status);
        Assert.Empty(gitLab.Retries);
    }

    [Fact]
    public async Task Server_errors_are_retried()
    {
        using var gitLab = new FakeGitLab(Token) { FailRequest = number => number <= 2 ? HttpStatusCode.ServiceUnavailable : null };
        gitLab.AddJob(42, 500, "train", "success");
        var log = new List<string>();
        using var client = new GitLabClient(new Uri(gitLab.Url), new Secret(Token), log.Add);

        var job = await client.GetJobAsync(42, 500, TestContext.Current.CancellationToken);

        Assert.Equal("success", job.Status);
        Assert.Equal(3, gitLab.Requests.Count);
        Assert.Equal(2, log.Count(line => line.Contains("503", StringComparison.Ordinal)));
    }

    [Fact]
    public async Task The_api_lives_under_the_instance_path()
    {
        using var gitLab = new FakeGitLab(Token);
        using var client = new GitLabClient(new Uri(gitLab.Url + "/gitlab"), new Secret(Token), _ => { });

        await Assert.ThrowsAsync<GitLabApiException>(() => client.GetJobAsync(1, 2, TestContext.Current.CancellationToken));

        Assert.Equal(["GET /gitlab/api/v4/projects/1/jobs/2"], gitLab.Requests);
    }
}

public sealed class ContinuationTests
{
    private static readonly DateTimeOffset At = DateTimeOffset.Parse("2026-11-28T10:00:00Z", System.Globalization.CultureInfo.InvariantCulture);

    [Fact]
    public void A_job_is_the_segment_the_record_names_it_for_and_otherwise_starts_a_chain()
    {
        Assert.Equal(1, ContinuationRecord.SegmentOf(null, 7));
        // The retry's answer is recorded: only that job is the next segment.
        var retried = new ContinuationRecord(3, 6, 7, ContinuationRecord.Retried, At);
        Assert.Equal(3, ContinuationRecord.SegmentOf(retried, 7));
        Assert.Equal(1, ContinuationRecord.SegmentOf(retried, 8));
        // A retry in flight: its job may start before the answer is recorded, but the job being
        // continued (prepare run again for it) is not its own continuation.
        var retrying = new ContinuationRecord(3, 6, null, ContinuationRecord.Retrying, At);
        Assert.Equal(3, ContinuationRecord.SegmentOf(retrying, 7));
        Assert.Equal(1, ContinuationRecord.SegmentOf(retrying, 6));
        Assert.Equal(1, ContinuationRecord.SegmentOf(retrying with { State = ContinuationRecord.Failed }, 7));
    }

    /// <summary>A continuer of job 901 (project 7) into segment 2, against a fake GitLab and a real file store.</summary>
    private sealed class Continuing : IDisposable
    {
        public Continuing(string status, string serverToken = "glpat-continuer", string? clientToken = null)
        {
            GitLab = new FakeGitLab(serverToken) { NextJobId = 902 };
            GitLab.AddJob(7, 901, "train", status);
            var storeRoot = Directory.CreateTempSubdirectory("continuation-store").FullName;
            Repository = new CheckpointRepository(new FileObjectStore(storeRoot), "checkpoints", "", "run-abc", _ => { });
            var settings = new ContinuationSettings { GitLabUrl = new Uri(GitLab.Url), Token = new Secret(clientToken ?? serverToken), MaxSegments = 5, JobEndPollInterval = TimeSpan.FromMilliseconds(50) };
            Client = new GitLabClient(settings.GitLabUrl, settings.Token, Log.Add);
            Continuer = new JobContinuer(Client, Repository, settings, Log.Add);
        }

        public FakeGitLab GitLab { get; }
        public CheckpointRepository Repository { get; }
        public GitLabClient Client { get; }
        public JobContinuer Continuer { get; }
        public List<string> Log { get; } = [];

        public Task<long?> ContinueAsync() => Continuer.ContinueAsync(new ContinuationRequest(7, 901, 2), TestContext.Current.CancellationToken);

        public Task<ContinuationRecord?> RecordAsync() => Repository.ReadContinuationAsync(TestContext.Current.CancellationToken);

        public void Dispose()
        {
            Client.Dispose();
            GitLab.Dispose();
        }
    }

    [Fact]
    public async Task The_continuer_waits_for_the_job_to_end_then_retries_it_and_records_the_chain()
    {
        using var continuing = new Continuing("running");

        var retry = continuing.ContinueAsync();
        await Task.Delay(300, TestContext.Current.CancellationToken);
        Assert.False(retry.IsCompleted, "retried a job that was still running");
        Assert.Empty(continuing.GitLab.Retries);
        continuing.GitLab.SetStatus(901, "failed");
        var next = await retry;

        Assert.Equal(902, next);
        Assert.Equal([(901L, 902L)], continuing.GitLab.Retries);
        var record = await continuing.RecordAsync();
        Assert.Equal((2, 901L, (long?)902, ContinuationRecord.Retried), (record!.Segment, record.FromJob, record.NextJob, record.State));
        Assert.Equal(2, ContinuationRecord.SegmentOf(record, 902));
    }

    [Fact]
    public async Task A_job_cancelled_after_its_deadline_signal_is_not_continued()
    {
        using var continuing = new Continuing("canceled");

        var next = await continuing.ContinueAsync();

        Assert.Null(next);
        Assert.Empty(continuing.GitLab.Retries);
        Assert.Contains(continuing.Log, line => line.Contains("'canceled'", StringComparison.Ordinal));
        Assert.Null(await continuing.RecordAsync());
    }

    [Fact]
    public async Task A_refused_retry_is_recorded_so_the_next_job_can_say_why()
    {
        using var continuing = new Continuing("failed");
        // Someone retried the job by hand first: GitLab retries a job once.
        await continuing.Client.RetryJobAsync(7, 901, TestContext.Current.CancellationToken);

        var error = await Assert.ThrowsAsync<GitLabApiException>(continuing.ContinueAsync);

        Assert.Equal(HttpStatusCode.Forbidden, error.Status);
        var record = await continuing.RecordAsync();
        Assert.Equal((ContinuationRecord.Failed, 901L), (record!.State, record.FromJob));
        Assert.Contains("403", record.Error);
        // The hand-made retry is a new chain, not segment 2.
        Assert.Equal(1, ContinuationRecord.SegmentOf(record, continuing.GitLab.Retries.Single().To));
    }

    [Fact]
    public async Task A_revoked_token_continues_nothing()
    {
        using var continuing = new Continuing("failed", serverToken: "the-right-token", clientToken: "a-revoked-token");

        await Assert.ThrowsAsync<GitLabApiException>(continuing.ContinueAsync);

        Assert.Empty(continuing.GitLab.Retries);
        Assert.Null(await continuing.RecordAsync());
    }
}

public sealed class ContinuationConfigTests
{
    [Fact]
    public void Continuation_is_off_without_a_url_and_token_and_on_with_both()
    {
        Assert.False(ConfigLoader.Parse("", "empty.toml").Continuation.Enabled);

        var config = ConfigLoader.Parse("[continuation]\ngitlab_url = \"https://gitlab.example.com\"\ntoken = \"glpat-abc\"\nmax_segments = 4\njob_end_wait_seconds = 120\n", "test.toml");

        Assert.True(config.Continuation.Enabled);
        Assert.Equal(new Uri("https://gitlab.example.com"), config.Continuation.GitLabUrl);
        Assert.Equal(4, config.Continuation.MaxSegments);
        Assert.Equal(TimeSpan.FromSeconds(120), config.Continuation.JobEndWait);
        Assert.DoesNotContain("glpat-abc", config.Continuation.ToString());
    }

    [Theory]
    [InlineData("gitlab_url = \"https://gitlab.example.com\"", "continuation.token")]
    [InlineData("token = \"glpat-abc\"", "continuation.gitlab_url")]
    [InlineData("gitlab_url = \"ftp://gitlab.example.com\"\ntoken = \"t\"", "continuation.gitlab_url")]
    [InlineData("gitlab_url = \"https://user:pass@gitlab.example.com\"\ntoken = \"t\"", "continuation.gitlab_url")]
    [InlineData("gitlab_url = \"https://gitlab.example.com/?x=1\"\ntoken = \"t\"", "continuation.gitlab_url")]
    [InlineData("gitlab_url = \"https://gitlab.example.com\"\ntoken = \"two words\"", "continuation.token")]
    [InlineData("gitlab_url = \"https://gitlab.example.com\"\ntoken = \"t\"\nmax_segments = 0", "continuation.max_segments")]
    [InlineData("gitlab_url = \"https://gitlab.example.com\"\ntoken = \"t\"\nsegments = 3", "continuation.segments")]
    public void Bad_continuation_settings_name_their_key(string table, string key)
    {
        var error = Assert.Throws<ConfigurationException>(() => ConfigLoader.Parse("[continuation]\n" + table + "\n", "bad.toml"));

        Assert.Equal(key, error.Key);
    }
}
