using GpuExecutor.Configuration;
using GpuExecutor.Continuation;
using GpuExecutor.Outcomes;
using GpuExecutor.Protocol;
using GpuExecutor.Tests.Fakes;
using GpuExecutor.Workflows;

namespace GpuExecutor.Tests;

/// <summary>
/// Experiment tracking against the fake of GitLab's MLflow API: one MLflow run per training run
/// across jobs, found through the record in the checkpoint store; the URI from trusted places
/// only; the token from the job's own variable and in no log; nothing at all with tracking off.
/// </summary>
public sealed class ExperimentTrackingTests : IDisposable
{
    private const string Token = "glpat-mlflow-job-token-8812";
    private readonly string _stateDir = Directory.CreateTempSubdirectory("gpu-executor-tracking").FullName;
    private readonly FakeMlflow _mlflow = new(Token);

    private static IGitLabMlflow OpenGitLab(Uri gitLab, Secret token, Action<string> log) => new GitLabClient(gitLab, token, log);

    private ExecutorConfig Config(string mlflowTable) =>
        ConfigLoader.Parse($"state_dir = \"{_stateDir}\"\n[mlflow]\n{mlflowTable}\n", "test.toml");

    /// <summary>A training job of run "digits", in project 41 (ml/x) of the fake's GitLab.</summary>
    private JobPayload Job(long jobId, Dictionary<string, string>? extra = null)
    {
        var variables = new Dictionary<string, string> { ["CHECKPOINTS"] = "on", ["CHECKPOINT_RUN_KEY"] = "digits", ["MLFLOW_TRACKING_TOKEN"] = Token };
        foreach (var (key, value) in extra ?? [])
            variables[key] = value;
        return TestPayloads.Payload(jobId, 41, variables, repoUrl: $"{_mlflow.Url.Replace("http://", "http://gitlab-ci-token:job-token-xyz@", StringComparison.Ordinal)}/ml/x.git");
    }

    private async Task<(Dictionary<string, string> Environment, string Log)> AttachAsync(ExecutorConfig config, JobPayload payload, string? restored = null, long? adopted = null)
    {
        var log = new StringWriter();
        var environment = await new ExperimentTracking(config, new LocalStores(), OpenGitLab, log).AttachAsync(payload, JobIdentity.From(payload), restored, adopted, TestContext.Current.CancellationToken);
        return (environment, log.ToString());
    }

    [Fact]
    public async Task Every_job_of_a_training_run_and_its_adopter_track_into_one_MLflow_run_tagged_with_each_job()
    {
        var config = Config("tracking = \"gitlab\"");

        var (first, firstLog) = await AttachAsync(config, Job(501));
        var (second, _) = await AttachAsync(config, Job(502), restored: "7");
        var (adopter, _) = await AttachAsync(config, Job(503), adopted: 502);

        var run = Assert.Single(_mlflow.Runs);
        Assert.Equal("p41-digits", run.Name);
        Assert.Equal($"{_mlflow.Url}/api/v4/projects/41/ml/mlflow", first["MLFLOW_TRACKING_URI"]);
        Assert.All(new[] { first, second, adopter }, environment => Assert.Equal(run.Id, environment["MLFLOW_RUN_ID"]));
        Assert.Equal(["gpu-executor"], _mlflow.Experiments.Keys);
        Assert.Contains("restored generation none", run.Tags["gpu_executor.job.501"]);
        Assert.Contains("restored generation 7", run.Tags["gpu_executor.job.502"]);
        Assert.Contains("adopted job 502's running training", run.Tags["gpu_executor.job.503"]);
        Assert.Contains("created MLflow run", firstLog);
        Assert.Equal(0, _mlflow.UnauthorizedRequests);
    }

    [Fact]
    public async Task The_URI_comes_from_the_payload_s_repository_URL_or_the_config_never_from_a_job_variable()
    {
        var config = Config("tracking = \"gitlab\"");
        // A job that points the API elsewhere: its token must not go there.
        var payload = Job(511, new Dictionary<string, string> { ["CI_API_V4_URL"] = "http://127.0.0.1:9/api/v4", ["CI_SERVER_URL"] = "http://127.0.0.1:9" });

        var (environment, _) = await AttachAsync(config, payload);

        Assert.StartsWith(_mlflow.Url + "/api/v4/projects/41/", environment["MLFLOW_TRACKING_URI"]);
        Assert.Equal(new Uri("https://gitlab.example.com/gitlab/"), ExperimentTracking.FromRepositoryUrl(TestPayloads.Payload(1, 41, new Dictionary<string, string>(), repoUrl: "https://gitlab-ci-token:abc@gitlab.example.com/gitlab/ml/x.git")));
        Assert.Null(ExperimentTracking.FromRepositoryUrl(TestPayloads.Payload(1, 41, new Dictionary<string, string>(), repoUrl: "https://gitlab.example.com/other/project.git")));
        Assert.Null(ExperimentTracking.FromRepositoryUrl(TestPayloads.Payload(1, 41, new Dictionary<string, string>(), repoUrl: "file:///srv/ml/x.git")));
        // The config's URL wins over the payload's.
        Assert.Equal(new Uri("https://internal.example/"), new ExperimentTracking(Config("tracking = \"gitlab\"\ngitlab_url = \"https://internal.example/\""), new LocalStores(), OpenGitLab, TextWriter.Null).GitLabUrl(payload));
    }

    [Fact]
    public async Task The_token_is_the_job_s_own_variable_and_appears_in_no_log()
    {
        var (environment, log) = await AttachAsync(Config("tracking = \"gitlab\"\ntoken_variable = \"TEAM_MLFLOW_TOKEN\""), Job(521, new Dictionary<string, string> { ["TEAM_MLFLOW_TOKEN"] = Token }));
        Assert.True(environment.ContainsKey("MLFLOW_RUN_ID"), log);
        Assert.DoesNotContain(Token, log);
        Assert.DoesNotContain(environment.Values, value => value.Contains(Token, StringComparison.Ordinal));

        // Without the variable: no tracking, a clear line, and not one request.
        var requests = _mlflow.Requests.Count;
        var payload = TestPayloads.Payload(522, 41, new Dictionary<string, string> { ["CHECKPOINTS"] = "on", ["CHECKPOINT_RUN_KEY"] = "digits" }, repoUrl: _mlflow.Url + "/ml/x.git");
        var (untracked, untrackedLog) = await AttachAsync(Config("tracking = \"gitlab\""), payload);
        Assert.Empty(untracked);
        Assert.Contains("the job has no MLFLOW_TRACKING_TOKEN variable", untrackedLog);
        Assert.Equal(requests, _mlflow.Requests.Count);
    }

    [Fact]
    public async Task With_tracking_off_no_variable_is_set_and_GitLab_is_not_asked()
    {
        var (environment, log) = await AttachAsync(ConfigLoader.Parse($"state_dir = \"{_stateDir}\"\n", "test.toml"), Job(531));
        Assert.Empty(environment);
        Assert.Empty(log);
        Assert.Empty(_mlflow.Requests);
    }

    [Fact]
    public async Task A_GitLab_that_refuses_the_token_costs_the_job_its_tracking_and_nothing_else()
    {
        var payload = Job(541, new Dictionary<string, string> { ["MLFLOW_TRACKING_TOKEN"] = "glpat-wrong" });
        var (environment, log) = await AttachAsync(Config("tracking = \"gitlab\""), payload);
        Assert.Empty(environment);
        Assert.Contains("WARNING: experiment tracking is off for this job", log);
        Assert.Contains("401", log);
        Assert.DoesNotContain("glpat-wrong", log);
    }

    [Theory]
    [InlineData("tracking = \"mlflow\"", "mlflow.tracking")]
    [InlineData("tracking = \"gitlab\"\ntoken_variable = \"A B\"", "mlflow.token_variable")]
    [InlineData("tracking = \"gitlab\"\nexperiment = \"\"", "mlflow.experiment")]
    [InlineData("tracking = \"gitlab\"\ngitlab_url = \"https://user:pw@gitlab.example.com\"", "mlflow.gitlab_url")]
    [InlineData("tracking = \"gitlab\"\nendpoint = \"x\"", "mlflow.endpoint")]
    public void A_bad_mlflow_table_is_refused_naming_the_key(string table, string key)
    {
        var error = Assert.Throws<ConfigurationException>(() => Config(table));
        Assert.Contains(key, error.Message);
    }

    public void Dispose()
    {
        _mlflow.Dispose();
        Directory.Delete(_stateDir, recursive: true);
    }
}
