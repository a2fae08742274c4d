using System.Collections.Concurrent;
using System.Globalization;
using System.Net;
using System.Text;
using System.Text.Json;
using System.Text.RegularExpressions;

namespace GpuExecutor.Tests;

/// <summary>
/// The part of the GitLab REST API (v4) that continuation uses, as docs.gitlab.com/ee/api/jobs.html
/// describes it: GET /projects/:id/jobs/:job_id, and POST /projects/:id/jobs/:job_id/retry, which
/// answers 201 with the new job; and the pipeline trigger API that the retrain-trigger component
/// calls. Requests need the PRIVATE-TOKEN header (401 without it); a
/// missing job is 404; a job that has not ended, or was retried already, is not retryable (403).
/// No GitLab server can run on these machines, so this stands in for one.
/// </summary>
public sealed partial class FakeGitLab : IDisposable
{
    private readonly LoopbackHttpServer _server;
    private readonly string _token;
    private readonly ConcurrentDictionary<long, Job> _jobs = new();
    private readonly ConcurrentQueue<(long From, long To)> _retries = new();
    private readonly ConcurrentQueue<string> _requests = new();
    private readonly ConcurrentQueue<IReadOnlyDictionary<string, string>> _triggers = new();
    private readonly Lock _lock = new();
    private int _unauthorized;
    private int _requestCount;

    private sealed record Job(long ProjectId, long Id, string Name, string Status, bool Retried);

    public FakeGitLab(string token)
    {
        _token = token;
        _server = new LoopbackHttpServer(RespondAsync);
    }

    public string Url => _server.Url;

    /// <summary>The id the next retry gets.</summary>
    public long NextJobId { get; set; } = 1_000_000;

    /// <summary>Given the request's number (1, 2, …), a status to answer instead of serving it: a server error, say.</summary>
    public Func<int, HttpStatusCode?> FailRequest { get; set; } = _ => null;

    public IReadOnlyList<(long From, long To)> Retries => _retries.ToList();

    /// <summary>Waits, up to <paramref name="limit"/>, for a retry of job <paramref name="fromJobId"/>: the agent makes it once the job has ended.</summary>
    public async Task WaitForRetryAsync(long fromJobId, TimeSpan limit, CancellationToken cancellationToken)
    {
        var waited = System.Diagnostics.Stopwatch.StartNew();
        while (!_retries.Any(retry => retry.From == fromJobId) && waited.Elapsed < limit)
            await Task.Delay(200, cancellationToken);
    }

    /// <summary>The pipeline trigger token the trigger API accepts; null: none.</summary>
    public string? TriggerToken { get; set; }

    /// <summary>Each trigger's form fields, in order.</summary>
    public IReadOnlyList<IReadOnlyDictionary<string, string>> Triggers => _triggers.ToList();
    public IReadOnlyList<string> Requests => _requests.ToList();
    public int UnauthorizedRequests => Volatile.Read(ref _unauthorized);

    public void AddJob(long projectId, long jobId, string name, string status) => _jobs[jobId] = new Job(projectId, jobId, name, status, false);

    public void SetStatus(long jobId, string status)
    {
        lock (_lock)
            _jobs[jobId] = _jobs[jobId] with { Status = status };
    }

    private Task RespondAsync(HttpListenerContext context)
    {
        var (status, body) = Answer(context.Request);
        return LoopbackHttpServer.ReplyJsonAsync(context, status, body);
    }

    private (HttpStatusCode Status, string Body) Answer(HttpListenerRequest request)
    {
        var path = request.Url?.AbsolutePath ?? "";
        _requests.Enqueue($"{request.HttpMethod} {path}");
        if (FailRequest(Interlocked.Increment(ref _requestCount)) is { } failure)
            return (failure, Message($"{(int)failure} injected"));
        // The pipeline trigger API authenticates by the trigger token in the form, not a header
        // (docs.gitlab.com/ee/ci/triggers): POST /projects/:id/trigger/pipeline with token, ref
        // and variables[KEY]; 201 with the new pipeline.
        if (TriggerPath().IsMatch(path) && request.HttpMethod == "POST")
        {
            string form;
            using (var reader = new StreamReader(request.InputStream, Encoding.UTF8))
                form = reader.ReadToEnd();
            var fields = form.Split('&', StringSplitOptions.RemoveEmptyEntries).Select(pair => pair.Split('=', 2))
                .ToDictionary(pair => Uri.UnescapeDataString(pair[0].Replace('+', ' ')), pair => pair.Length > 1 ? Uri.UnescapeDataString(pair[1].Replace('+', ' ')) : "");
            if (TriggerToken is null || fields.GetValueOrDefault("token") != TriggerToken)
                return (HttpStatusCode.NotFound, Message("404 Not Found"));
            _triggers.Enqueue(fields);
            return (HttpStatusCode.Created, JsonSerializer.Serialize(new Dictionary<string, object> { ["id"] = 77, ["status"] = "created", ["ref"] = fields.GetValueOrDefault("ref", "") }));
        }
        if (request.Headers["PRIVATE-TOKEN"] != _token)
        {
            Interlocked.Increment(ref _unauthorized);
            return (HttpStatusCode.Unauthorized, Message("401 Unauthorized"));
        }
        // GET /user (docs.gitlab.com/ee/api/users): the token's own user.
        if (path == "/api/v4/user" && request.HttpMethod == "GET")
            return (HttpStatusCode.OK, JsonSerializer.Serialize(new Dictionary<string, object> { ["id"] = 42, ["username"] = "gpu-bot", ["state"] = "active" }));
        var match = JobPath().Match(path);
        if (!match.Success)
            return (HttpStatusCode.NotFound, Message("404 Not Found"));
        var projectId = long.Parse(match.Groups[1].Value, CultureInfo.InvariantCulture);
        var jobId = long.Parse(match.Groups[2].Value, CultureInfo.InvariantCulture);
        var retry = match.Groups[3].Success;
        lock (_lock)
        {
            if (!_jobs.TryGetValue(jobId, out var job) || job.ProjectId != projectId)
                return (HttpStatusCode.NotFound, Message("404 Job Not Found"));
            if (!retry && request.HttpMethod == "GET")
                return (HttpStatusCode.OK, JobJson(job));
            if (!retry || request.HttpMethod != "POST")
                return (HttpStatusCode.MethodNotAllowed, Message("405 Method Not Allowed"));
            if (job.Retried || job.Status is not ("success" or "failed" or "canceled"))
                return (HttpStatusCode.Forbidden, Message("403 Forbidden - Job is not retryable"));
            _jobs[jobId] = job with { Retried = true };
            var next = new Job(projectId, NextJobId++, job.Name, "pending", false);
            _jobs[next.Id] = next;
            _retries.Enqueue((jobId, next.Id));
            return (HttpStatusCode.Created, JobJson(next));
        }
    }

    private static string Message(string text) => JsonSerializer.Serialize(new Dictionary<string, string> { ["message"] = text });

    private static string JobJson(Job job) => JsonSerializer.Serialize(new Dictionary<string, object>
    {
        ["id"] = job.Id,
        ["name"] = job.Name,
        ["status"] = job.Status,
        ["stage"] = "train",
        ["ref"] = "main",
        ["created_at"] = "2026-11-28T09:00:00.000Z",
    });

    [GeneratedRegex(@"^/api/v4/projects/(\d+)/jobs/(\d+)(/retry)?$")]
    private static partial Regex JobPath();

    [GeneratedRegex(@"^/api/v4/projects/(\d+)/trigger/pipeline$")]
    private static partial Regex TriggerPath();

    public void Dispose() => _server.Dispose();
}
