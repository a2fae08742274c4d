using System.Collections.Concurrent;
using System.Globalization;
using System.Net;
using System.Text;
using System.Text.Json;
using System.Text.Json.Nodes;
using System.Text.RegularExpressions;

namespace GpuExecutor.Tests;

/// <summary>
/// GitLab's MLflow-compatible API (/api/v4/projects/:id/ml/mlflow/api/2.0/mlflow/...), the
/// endpoints GitLab implements and the executor and the example trainer call, as the MLflow REST
/// API docs describe them: experiments/get-by-name (404 RESOURCE_DOES_NOT_EXIST when missing),
/// experiments/create, runs/create, runs/get, runs/set-tag, runs/log-metric, runs/log-batch and
/// runs/update. Requests need the token in PRIVATE-TOKEN or "Authorization: Bearer" (401
/// without). No GitLab server can run on these machines, so this stands in for one.
/// </summary>
public sealed partial class FakeMlflow : IDisposable
{
    private readonly LoopbackHttpServer _server;
    private readonly string _token;
    private readonly Lock _lock = new();
    private readonly Dictionary<string, string> _experiments = new(StringComparer.Ordinal);
    private readonly Dictionary<string, Run> _runs = new(StringComparer.Ordinal);
    private readonly ConcurrentQueue<string> _requests = new();
    private int _unauthorized;

    public sealed record Metric(string Key, double Value, long Step, long Timestamp);

    public sealed class Run(string id, string experimentId, string name)
    {
        public string Id { get; } = id;
        public string ExperimentId { get; } = experimentId;
        public string Name { get; } = name;
        public Dictionary<string, string> Tags { get; } = new(StringComparer.Ordinal);

        /// <summary>In the order they arrived.</summary>
        public List<Metric> Metrics { get; } = [];
        public string Status { get; set; } = "RUNNING";
    }

    public FakeMlflow(string token)
    {
        _token = token;
        _server = new LoopbackHttpServer(RespondAsync);
    }

    /// <summary>The GitLab instance's base URL.</summary>
    public string Url => _server.Url;

    public IReadOnlyList<string> Requests => _requests.ToList();
    public int UnauthorizedRequests => Volatile.Read(ref _unauthorized);

    public IReadOnlyList<Run> Runs
    {
        get
        {
            lock (_lock)
                return _runs.Values.ToList();
        }
    }

    public IReadOnlyDictionary<string, string> Experiments
    {
        get
        {
            lock (_lock)
                return new Dictionary<string, string>(_experiments);
        }
    }

    private async Task RespondAsync(HttpListenerContext context)
    {
        string body;
        try
        {
            using var reader = new StreamReader(context.Request.InputStream, Encoding.UTF8);
            body = await reader.ReadToEndAsync();
        }
        catch (Exception error) when (error is HttpListenerException or IOException or ObjectDisposedException)
        {
            return;
        }
        var (status, answer) = Answer(context.Request, body);
        await LoopbackHttpServer.ReplyJsonAsync(context, status, answer);
    }

    private (HttpStatusCode Status, string Body) Answer(HttpListenerRequest request, string body)
    {
        var path = request.Url?.AbsolutePath ?? "";
        _requests.Enqueue($"{request.HttpMethod} {path}");
        var bearer = request.Headers["Authorization"] is { } authorization && authorization.StartsWith("Bearer ", StringComparison.Ordinal) ? authorization["Bearer ".Length..] : null;
        if (request.Headers["PRIVATE-TOKEN"] != _token && bearer != _token)
        {
            Interlocked.Increment(ref _unauthorized);
            return (HttpStatusCode.Unauthorized, Error("UNAUTHENTICATED", "401 Unauthorized"));
        }
        var match = MlflowPath().Match(path);
        if (!match.Success)
            return (HttpStatusCode.NotFound, Error("ENDPOINT_NOT_FOUND", "404 Not Found"));
        var endpoint = match.Groups[2].Value;
        var query = request.QueryString;
        JsonObject input;
        try
        {
            input = request.HttpMethod == "POST" ? JsonNode.Parse(body) as JsonObject ?? [] : [];
        }
        catch (JsonException)
        {
            return (HttpStatusCode.BadRequest, Error("INVALID_PARAMETER_VALUE", "the body is not JSON"));
        }
        string? Field(string name) => input[name]?.GetValue<string>();
        lock (_lock)
        {
            switch (request.HttpMethod, endpoint)
            {
                case ("GET", "experiments/get-by-name"):
                    var name = query["experiment_name"] ?? "";
                    return _experiments.TryGetValue(name, out var found)
                        ? (HttpStatusCode.OK, Json(new JsonObject { ["experiment"] = new JsonObject { ["experiment_id"] = found, ["name"] = name } }))
                        : (HttpStatusCode.NotFound, Error("RESOURCE_DOES_NOT_EXIST", $"experiment '{name}' does not exist"));
                case ("POST", "experiments/create"):
                    var experimentName = Field("name") ?? "";
                    if (_experiments.ContainsKey(experimentName))
                        return (HttpStatusCode.BadRequest, Error("RESOURCE_ALREADY_EXISTS", "experiment exists"));
                    _experiments[experimentName] = (_experiments.Count + 1).ToString(CultureInfo.InvariantCulture);
                    return (HttpStatusCode.OK, Json(new JsonObject { ["experiment_id"] = _experiments[experimentName] }));
                case ("POST", "runs/create"):
                    var experimentId = Field("experiment_id") ?? "";
                    if (!_experiments.ContainsValue(experimentId))
                        return (HttpStatusCode.NotFound, Error("RESOURCE_DOES_NOT_EXIST", "no such experiment"));
                    var run = new Run(Guid.NewGuid().ToString("N"), experimentId, Field("run_name") ?? "");
                    foreach (var tag in input["tags"]?.AsArray() ?? [])
                        run.Tags[tag!["key"]!.GetValue<string>()] = tag["value"]!.GetValue<string>();
                    _runs[run.Id] = run;
                    return (HttpStatusCode.OK, Json(new JsonObject { ["run"] = RunJson(run) }));
                case ("GET", "runs/get"):
                    return _runs.TryGetValue(query["run_id"] ?? "", out var existing)
                        ? (HttpStatusCode.OK, Json(new JsonObject { ["run"] = RunJson(existing) }))
                        : (HttpStatusCode.NotFound, Error("RESOURCE_DOES_NOT_EXIST", "no such run"));
            }
            if (request.HttpMethod != "POST" || !_runs.TryGetValue(Field("run_id") ?? "", out var target))
                return (HttpStatusCode.NotFound, Error("RESOURCE_DOES_NOT_EXIST", "no such run or endpoint"));
            switch (endpoint)
            {
                case "runs/set-tag":
                    target.Tags[Field("key") ?? ""] = Field("value") ?? "";
                    break;
                case "runs/log-metric":
                    target.Metrics.Add(MetricOf(input));
                    break;
                case "runs/log-batch":
                    foreach (var metric in input["metrics"]?.AsArray() ?? [])
                        target.Metrics.Add(MetricOf(metric!.AsObject()));
                    break;
                case "runs/update":
                    target.Status = Field("status") ?? target.Status;
                    break;
                default:
                    return (HttpStatusCode.NotFound, Error("ENDPOINT_NOT_FOUND", "404 Not Found"));
            }
            return (HttpStatusCode.OK, "{}");
        }
    }

    private static Metric MetricOf(JsonObject input) => new(
        input["key"]!.GetValue<string>(), input["value"]!.GetValue<double>(),
        input["step"]?.GetValue<long>() ?? 0, input["timestamp"]?.GetValue<long>() ?? 0);

    /// <summary>runs/get's shape: info, and data with the latest value of each metric (GitLab's "metrics" list) and the tags.</summary>
    private static JsonObject RunJson(Run run) => new()
    {
        ["info"] = new JsonObject { ["run_id"] = run.Id, ["run_uuid"] = run.Id, ["experiment_id"] = run.ExperimentId, ["run_name"] = run.Name, ["status"] = run.Status },
        ["data"] = new JsonObject
        {
            ["metrics"] = new JsonArray(run.Metrics.GroupBy(metric => metric.Key)
                .Select(group => group.MaxBy(metric => metric.Step)!)
                .Select(metric => (JsonNode)new JsonObject { ["key"] = metric.Key, ["value"] = metric.Value, ["step"] = metric.Step, ["timestamp"] = metric.Timestamp }).ToArray()),
            ["tags"] = new JsonArray(run.Tags.Select(tag => (JsonNode)new JsonObject { ["key"] = tag.Key, ["value"] = tag.Value }).ToArray()),
        },
    };

    private static string Json(JsonObject value) => value.ToJsonString();

    private static string Error(string code, string message) => Json(new JsonObject { ["error_code"] = code, ["message"] = message });

    [GeneratedRegex(@"^/api/v4/projects/(\d+)/ml/mlflow/api/2\.0/mlflow/([a-z-]+/[a-z-]+)$")]
    private static partial Regex MlflowPath();

    public void Dispose() => _server.Dispose();
}
