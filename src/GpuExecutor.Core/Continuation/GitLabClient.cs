using System.Globalization;
using System.Net;
using System.Net.Http.Json;
using System.Text.Json.Serialization;
using GpuExecutor.Configuration;
using Polly;
using Polly.Retry;

namespace GpuExecutor.Continuation;

/// <summary>A job as the GitLab REST API describes it (GET /projects/:id/jobs/:job_id), reduced to what continuation reads.</summary>
public sealed record GitLabJob(
    [property: JsonPropertyName("id")] long Id,
    [property: JsonPropertyName("status")] string Status,
    [property: JsonPropertyName("name")] string? Name)
{
    /// <summary>Statuses after which the job will not change again, and after which GitLab allows a retry.</summary>
    public bool HasEnded => Status is "success" or "failed" or "canceled";
}

/// <summary>The token's user (GET /user), reduced to its name.</summary>
public sealed record GitLabUser([property: JsonPropertyName("username")] string Username);

/// <summary>The GitLab API answered, but not with what was asked; the message never holds the token.</summary>
public sealed class GitLabApiException(string message, HttpStatusCode? status, Exception? inner = null) : Exception(message, inner)
{
    public HttpStatusCode? Status { get; } = status;

    /// <summary>Worth another try: the server or the network failed, or it asked us to slow down.</summary>
    public bool Transient => Status is null or HttpStatusCode.TooManyRequests || (int)Status >= 500;
}

/// <summary>
/// The calls the executor makes to the GitLab REST API (v4), through one typed
/// <see cref="HttpClient"/>: continuation's (read a job, retry it) and experiment tracking's (the
/// project's MLflow-compatible API: find or create the experiment and the run, tag it). The token goes in the PRIVATE-TOKEN header
/// and nowhere else: not in a URL, a log line or an exception message.
/// </summary>
public sealed class GitLabClient : IGitLabJobs, IGitLabMlflow
{
    private readonly HttpClient _http;
    private readonly ResiliencePipeline _retry;

    /// <param name="baseUrl">The GitLab instance, for example https://gitlab.example.com; the API is under /api/v4.</param>
    public GitLabClient(Uri baseUrl, Secret token, Action<string> log, HttpMessageHandler? handler = null)
    {
        _http = handler is null ? new HttpClient() : new HttpClient(handler);
        _http.BaseAddress = new Uri(baseUrl.AbsoluteUri.TrimEnd('/') + "/api/v4/");
        _http.Timeout = TimeSpan.FromSeconds(30);
        _http.DefaultRequestHeaders.Add("PRIVATE-TOKEN", token.Value);
        _http.DefaultRequestHeaders.UserAgent.ParseAdd("gpu-executor");
        _retry = new ResiliencePipelineBuilder()
            .AddRetry(new RetryStrategyOptions
            {
                MaxRetryAttempts = 5,
                BackoffType = DelayBackoffType.Exponential,
                UseJitter = true,
                Delay = TimeSpan.FromSeconds(1),
                ShouldHandle = new PredicateBuilder().Handle<GitLabApiException>(error => error.Transient),
                OnRetry = arguments =>
                {
                    log($"GitLab API: retrying after: {arguments.Outcome.Exception?.Message}");
                    return ValueTask.CompletedTask;
                },
            })
            .Build();
    }

    public Task<GitLabJob> GetJobAsync(long projectId, long jobId, CancellationToken cancellationToken) =>
        SendAsync(HttpMethod.Get, JobPath(projectId, jobId), null, GitLabJsonContext.Default.GitLabJob, cancellationToken);

    /// <summary>POST /projects/:id/jobs/:job_id/retry: a new job with the same name, in the same pipeline. Returns it.</summary>
    public Task<GitLabJob> RetryJobAsync(long projectId, long jobId, CancellationToken cancellationToken) =>
        SendAsync(HttpMethod.Post, JobPath(projectId, jobId) + "/retry", null, GitLabJsonContext.Default.GitLabJob, cancellationToken);

    public async Task<string> CurrentUserAsync(CancellationToken cancellationToken) =>
        (await SendAsync(HttpMethod.Get, "user", null, GitLabJsonContext.Default.GitLabUser, cancellationToken)).Username;

    private static string JobPath(long projectId, long jobId) =>
        string.Create(CultureInfo.InvariantCulture, $"projects/{projectId}/jobs/{jobId}");

    /// <summary>The project's MLflow-compatible API, as GitLab serves it: the MLflow tracking URI.</summary>
    public Uri MlflowTrackingUri(long projectId) => new(_http.BaseAddress!, MlflowPath(projectId).TrimEnd('/'));

    private static string MlflowPath(long projectId) =>
        string.Create(CultureInfo.InvariantCulture, $"projects/{projectId}/ml/mlflow/");

    /// <summary>GET experiments/get-by-name; null when there is none (404).</summary>
    public async Task<string?> FindMlflowExperimentAsync(long projectId, string name, CancellationToken cancellationToken)
    {
        try
        {
            var found = await SendAsync(HttpMethod.Get, MlflowPath(projectId) + "api/2.0/mlflow/experiments/get-by-name?experiment_name=" + Uri.EscapeDataString(name), null, GitLabJsonContext.Default.MlflowExperimentAnswer, cancellationToken);
            return found.Experiment?.ExperimentId;
        }
        catch (GitLabApiException error) when (error.Status == HttpStatusCode.NotFound)
        {
            return null;
        }
    }

    public async Task<string> CreateMlflowExperimentAsync(long projectId, string name, CancellationToken cancellationToken) =>
        (await SendAsync(HttpMethod.Post, MlflowPath(projectId) + "api/2.0/mlflow/experiments/create",
            JsonContent.Create(new MlflowCreateExperiment(name), GitLabJsonContext.Default.MlflowCreateExperiment), GitLabJsonContext.Default.MlflowExperimentCreated, cancellationToken)).ExperimentId;

    public async Task<string> CreateMlflowRunAsync(long projectId, string experimentId, string runName, IReadOnlyDictionary<string, string> tags, CancellationToken cancellationToken)
    {
        var request = new MlflowCreateRun(experimentId, runName, DateTimeOffset.UtcNow.ToUnixTimeMilliseconds(), tags.Select(tag => new MlflowTag(tag.Key, tag.Value)).ToList());
        var created = await SendAsync(HttpMethod.Post, MlflowPath(projectId) + "api/2.0/mlflow/runs/create",
            JsonContent.Create(request, GitLabJsonContext.Default.MlflowCreateRun), GitLabJsonContext.Default.MlflowRunAnswer, cancellationToken);
        return created.Run?.Info?.RunId ?? throw new GitLabApiException("runs/create: the answer has no run id", null);
    }

    /// <summary>GET runs/get; false when the run is gone (deleted in GitLab, say).</summary>
    public async Task<bool> MlflowRunExistsAsync(long projectId, string runId, CancellationToken cancellationToken)
    {
        try
        {
            await SendAsync(HttpMethod.Get, MlflowPath(projectId) + "api/2.0/mlflow/runs/get?run_id=" + Uri.EscapeDataString(runId), null, GitLabJsonContext.Default.MlflowRunAnswer, cancellationToken);
            return true;
        }
        catch (GitLabApiException error) when (error.Status == HttpStatusCode.NotFound)
        {
            return false;
        }
    }

    public Task SetMlflowTagAsync(long projectId, string runId, string key, string value, CancellationToken cancellationToken) =>
        SendAsync(HttpMethod.Post, MlflowPath(projectId) + "api/2.0/mlflow/runs/set-tag",
            JsonContent.Create(new MlflowSetTag(runId, key, value), GitLabJsonContext.Default.MlflowSetTag), GitLabJsonContext.Default.MlflowEmptyAnswer, cancellationToken);

    private async Task<T> SendAsync<T>(HttpMethod method, string path, HttpContent? content, System.Text.Json.Serialization.Metadata.JsonTypeInfo<T> answer, CancellationToken cancellationToken) =>
        await _retry.ExecuteAsync(async token =>
        {
            HttpResponseMessage response;
            try
            {
                response = await _http.SendAsync(new HttpRequestMessage(method, path) { Content = content }, token);
            }
            catch (Exception error) when (error is HttpRequestException || (error is TaskCanceledException && !token.IsCancellationRequested))
            {
                throw new GitLabApiException($"{method} {path}: {error.Message}", null, error);
            }
            using (response)
            {
                if (!response.IsSuccessStatusCode)
                {
                    // GitLab's error bodies are short JSON ({"message": "403 Forbidden"}); a proxy's may not be.
                    var body = await response.Content.ReadAsStringAsync(token);
                    throw new GitLabApiException($"{method} {path}: {(int)response.StatusCode} {response.ReasonPhrase} {Shorten(body)}".TrimEnd(), response.StatusCode);
                }
                try
                {
                    return await response.Content.ReadFromJsonAsync(answer, token)
                        ?? throw new GitLabApiException($"{method} {path}: the answer was empty", response.StatusCode);
                }
                catch (System.Text.Json.JsonException error)
                {
                    throw new GitLabApiException($"{method} {path}: the answer is not what the API documents: {error.Message}", response.StatusCode, error);
                }
            }
        }, cancellationToken);

    private static string Shorten(string body)
    {
        var line = body.ReplaceLineEndings(" ").Trim();
        return line.Length <= 200 ? line : line[..200] + "…";
    }

    public void Dispose() => _http.Dispose();
}

// The MLflow REST API's shapes (api/2.0/mlflow), reduced to what the executor sends and reads.
internal sealed record MlflowCreateExperiment([property: JsonPropertyName("name")] string Name);
internal sealed record MlflowExperimentCreated([property: JsonPropertyName("experiment_id")] string ExperimentId);
internal sealed record MlflowExperiment([property: JsonPropertyName("experiment_id")] string ExperimentId);
internal sealed record MlflowExperimentAnswer([property: JsonPropertyName("experiment")] MlflowExperiment? Experiment);
internal sealed record MlflowTag([property: JsonPropertyName("key")] string Key, [property: JsonPropertyName("value")] string Value);
internal sealed record MlflowCreateRun(
    [property: JsonPropertyName("experiment_id")] string ExperimentId,
    [property: JsonPropertyName("run_name")] string RunName,
    [property: JsonPropertyName("start_time")] long StartTime,
    [property: JsonPropertyName("tags")] List<MlflowTag> Tags);
internal sealed record MlflowRunInfo([property: JsonPropertyName("run_id")] string? RunId);
internal sealed record MlflowRun([property: JsonPropertyName("info")] MlflowRunInfo? Info);
internal sealed record MlflowRunAnswer([property: JsonPropertyName("run")] MlflowRun? Run);
internal sealed record MlflowSetTag([property: JsonPropertyName("run_id")] string RunId, [property: JsonPropertyName("key")] string Key, [property: JsonPropertyName("value")] string Value);
internal sealed record MlflowEmptyAnswer;

[JsonSerializable(typeof(GitLabJob))]
[JsonSerializable(typeof(GitLabUser))]
[JsonSerializable(typeof(MlflowCreateExperiment))]
[JsonSerializable(typeof(MlflowExperimentCreated))]
[JsonSerializable(typeof(MlflowExperimentAnswer))]
[JsonSerializable(typeof(MlflowCreateRun))]
[JsonSerializable(typeof(MlflowRunAnswer))]
[JsonSerializable(typeof(MlflowSetTag))]
[JsonSerializable(typeof(MlflowEmptyAnswer))]
internal sealed partial class GitLabJsonContext : JsonSerializerContext;
