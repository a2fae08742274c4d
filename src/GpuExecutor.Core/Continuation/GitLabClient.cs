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

/// <summary>The GitLab API answered, but not with what was asked; the message never holds the token.</summary>
public sealed class GitLabApiException(string message, HttpStatusCode? status, Exception? inner = null) : Exception(message, inner)
{
    public HttpStatusCode? Status { get; } = status;

    /// <summary>Worth another try: the server or the network failed, or it asked us to slow down.</summary>
    public bool Transient => Status is null or HttpStatusCode.TooManyRequests || (int)Status >= 500;
}

/// <summary>
/// The two calls continuation needs from the GitLab REST API (v4), through one typed
/// <see cref="HttpClient"/>: read a job, and retry it. The token goes in the PRIVATE-TOKEN header
/// and nowhere else: not in a URL, a log line or an exception message.
/// </summary>
public sealed class GitLabClient : IGitLabJobs
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
        SendAsync(HttpMethod.Get, JobPath(projectId, jobId), cancellationToken);

    /// <summary>POST /projects/:id/jobs/:job_id/retry: a new job with the same name, in the same pipeline. Returns it.</summary>
    public Task<GitLabJob> RetryJobAsync(long projectId, long jobId, CancellationToken cancellationToken) =>
        SendAsync(HttpMethod.Post, JobPath(projectId, jobId) + "/retry", cancellationToken);

    private static string JobPath(long projectId, long jobId) =>
        string.Create(CultureInfo.InvariantCulture, $"projects/{projectId}/jobs/{jobId}");

    private async Task<GitLabJob> SendAsync(HttpMethod method, string path, CancellationToken cancellationToken) =>
        await _retry.ExecuteAsync(async token =>
        {
            HttpResponseMessage response;
            try
            {
                response = await _http.SendAsync(new HttpRequestMessage(method, path), token);
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
                    return await response.Content.ReadFromJsonAsync(GitLabJsonContext.Default.GitLabJob, token)
                        ?? throw new GitLabApiException($"{method} {path}: the answer was empty", response.StatusCode);
                }
                catch (System.Text.Json.JsonException error)
                {
                    throw new GitLabApiException($"{method} {path}: the answer is not a job: {error.Message}", response.StatusCode, error);
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

[JsonSerializable(typeof(GitLabJob))]
internal sealed partial class GitLabJsonContext : JsonSerializerContext;
