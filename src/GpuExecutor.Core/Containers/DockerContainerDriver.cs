using System.Globalization;
using System.Net;
using System.Net.Sockets;
using Docker.DotNet;
using Docker.DotNet.Models;
using GpuExecutor.Images;

namespace GpuExecutor.Containers;

/// <summary>
/// The only class that touches Docker.DotNet. Every Docker error leaves here as a
/// <see cref="ContainerEngineException"/> (a system failure) or as one of the project's own
/// not-found/unavailable types; nothing above this class sees an SDK type.
/// </summary>
public sealed class DockerContainerDriver : IContainerDriver
{
    private readonly DockerClientConfiguration _configuration;
    private readonly DockerClient _client;
    private readonly string _endpoint;

    /// <summary>Where the daemon listens, for <see cref="EnsureReachableAsync"/>; null for an endpoint it cannot probe.</summary>
    private readonly EndPoint? _daemonEndPoint;

    /// <summary>Set once a call failed to reach the daemon, cleared once a probe reaches it again.</summary>
    private volatile bool _unreachable;

    public DockerContainerDriver(string endpoint)
    {
        _endpoint = endpoint;
        var uri = new Uri(endpoint);
        _daemonEndPoint = uri.Scheme switch
        {
            "unix" => new UnixDomainSocketEndPoint(uri.LocalPath),
            "tcp" or "http" or "https" => new DnsEndPoint(uri.Host, uri.Port),
            _ => null,
        };
        // No API version is pinned: Docker.DotNet sends unversioned paths, which dockerd 20.10
        // (API 1.41) and newer daemons both accept.
        _configuration = new DockerClientConfiguration(new Uri(endpoint), defaultTimeout: TimeSpan.FromSeconds(100));
        _client = _configuration.CreateClient();
    }

    public async Task<bool> ImageExistsAsync(string image, CancellationToken cancellationToken)
    {
        await EnsureReachableAsync($"inspect image '{image}'", cancellationToken);
        try
        {
            await _client.Images.InspectImageAsync(image, cancellationToken);
            return true;
        }
        catch (DockerImageNotFoundException)
        {
            return false;
        }
        catch (Exception error) when (IsEngineFailure(error, cancellationToken))
        {
            throw Wrap(error, $"inspect image '{image}'");
        }
    }

    public async Task PullImageAsync(string image, Action<string> progress, CancellationToken cancellationToken)
    {
        await EnsureReachableAsync($"pull '{image}'", cancellationToken);
        var reference = ImageReference.WithDefaultTag(image);
        string? lastError = null;
        var reporter = new Progress<JSONMessage>(message =>
        {
            if (message.Error is not null)
                lastError = message.Error.Message;
            else if (!string.IsNullOrEmpty(message.Status) && message.Progress is null)
                progress($"{message.ID} {message.Status}".Trim());
        });
        try
        {
            await _client.Images.CreateImageAsync(new ImagesCreateParameters { FromImage = reference }, null, reporter, cancellationToken);
        }
        catch (DockerApiException error) when (error.StatusCode is HttpStatusCode.NotFound or HttpStatusCode.Unauthorized or HttpStatusCode.Forbidden)
        {
            throw new ImageUnavailableException(image, $"the registry answered {(int)error.StatusCode}: {Summarize(error.ResponseBody)}", error);
        }
        catch (Exception error) when (IsEngineFailure(error, cancellationToken))
        {
            throw Wrap(error, $"pull image '{image}'");
        }

        // A pull can stream an error after a 200 status line (e.g. "manifest unknown").
        if (lastError is not null)
        {
            if (lastError.Contains("not found", StringComparison.OrdinalIgnoreCase) || lastError.Contains("unauthorized", StringComparison.OrdinalIgnoreCase) || lastError.Contains("denied", StringComparison.OrdinalIgnoreCase))
                throw new ImageUnavailableException(image, lastError);
            throw new ContainerEngineException($"pulling image '{image}' failed: {lastError}");
        }
    }

    public async Task<string> CreateAndStartAsync(ContainerSpec spec, CancellationToken cancellationToken)
    {
        await EnsureReachableAsync($"create container '{spec.Name}'", cancellationToken);
        string id;
        try
        {
            var created = await _client.Containers.CreateContainerAsync(DockerSpecConverter.ToCreateParameters(spec), cancellationToken);
            id = created.ID;
        }
        catch (Exception error) when (IsEngineFailure(error, cancellationToken))
        {
            throw Wrap(error, $"create container '{spec.Name}'");
        }

        try
        {
            await _client.Containers.StartContainerAsync(id, new ContainerStartParameters(), cancellationToken);
        }
        catch (Exception error) when (IsEngineFailure(error, cancellationToken))
        {
            throw Wrap(error, $"start container '{spec.Name}'");
        }
        return id;
    }

    public async Task<IReadOnlyList<ContainerSummary>> FindAsync(IReadOnlyDictionary<string, string> labels, CancellationToken cancellationToken)
    {
        await EnsureReachableAsync($"list containers", cancellationToken);
        IList<ContainerListResponse> found;
        try
        {
            var labelFilter = labels.ToDictionary(pair => $"{pair.Key}={pair.Value}", _ => true);
            found = await _client.Containers.ListContainersAsync(
                new ContainersListParameters
                {
                    All = true,
                    Filters = new Dictionary<string, IDictionary<string, bool>> { ["label"] = labelFilter },
                },
                cancellationToken);
        }
        catch (Exception error) when (IsEngineFailure(error, cancellationToken))
        {
            throw Wrap(error, "list containers");
        }

        return found
            .Select(container => new ContainerSummary(
                container.ID,
                container.Names?.FirstOrDefault()?.TrimStart('/') ?? container.ID,
                new Dictionary<string, string>(container.Labels ?? new Dictionary<string, string>()),
                new DateTimeOffset(DateTime.SpecifyKind(container.Created, DateTimeKind.Utc))))
            .ToList();
    }

    public async Task RemoveAsync(string idOrName, CancellationToken cancellationToken)
    {
        await EnsureReachableAsync($"remove container '{idOrName}'", cancellationToken);
        try
        {
            await _client.Containers.RemoveContainerAsync(idOrName, new ContainerRemoveParameters { Force = true, RemoveVolumes = true }, cancellationToken);
        }
        catch (DockerContainerNotFoundException)
        {
            // Already gone: removal is idempotent (cleanup may run twice, or after gc).
        }
        catch (DockerApiException error) when (error.StatusCode == HttpStatusCode.Conflict && error.ResponseBody.Contains("already in progress", StringComparison.OrdinalIgnoreCase))
        {
            // Another cleanup is removing it right now.
        }
        catch (Exception error) when (IsEngineFailure(error, cancellationToken))
        {
            throw Wrap(error, $"remove container '{idOrName}'");
        }
    }

    public async Task<ContainerState?> InspectStateAsync(string idOrName, CancellationToken cancellationToken)
    {
        await EnsureReachableAsync($"inspect container '{idOrName}'", cancellationToken);
        try
        {
            var inspected = await _client.Containers.InspectContainerAsync(idOrName, cancellationToken);
            return new ContainerState(inspected.State?.Running ?? false, (int)(inspected.State?.ExitCode ?? 0));
        }
        catch (DockerContainerNotFoundException)
        {
            return null;
        }
        catch (Exception error) when (IsEngineFailure(error, cancellationToken))
        {
            throw Wrap(error, $"inspect container '{idOrName}'");
        }
    }

    public async Task<ContainerIncidents> IncidentsSinceAsync(string idOrName, DateTimeOffset since, CancellationToken cancellationToken)
    {
        await EnsureReachableAsync($"read the events of container '{idOrName}'", cancellationToken);
        try
        {
            var inspected = await _client.Containers.InspectContainerAsync(idOrName, cancellationToken);
            var seen = new EventActions();
            // With an end time the daemon sends what its event buffer holds for the window and
            // closes the stream; the buffer is the daemon's memory, so a restart empties it.
            await _client.System.MonitorEventsAsync(
                new ContainerEventsParameters
                {
                    Since = since.ToUnixTimeSeconds().ToString(System.Globalization.CultureInfo.InvariantCulture),
                    Until = (DateTimeOffset.UtcNow.ToUnixTimeSeconds() + 1).ToString(System.Globalization.CultureInfo.InvariantCulture),
                    Filters = new Dictionary<string, IDictionary<string, bool>>
                    {
                        ["type"] = new Dictionary<string, bool> { ["container"] = true },
                        ["container"] = new Dictionary<string, bool> { [inspected.ID] = true },
                    },
                },
                seen,
                cancellationToken);
            var running = inspected.State?.Running ?? false;
            var pid = running ? (int)(inspected.State?.Pid ?? 0) : 0;
            return new ContainerIncidents(
                OutOfMemoryKills: seen.Count(action => action == "oom"),
                OutsideKills: seen.Count(action => action is "kill" or "stop"),
                Died: seen.Contains("die") || !running,
                DiedSeen: seen.Contains("die"),
                MemoryLimitBytes: inspected.HostConfig?.Memory is > 0 and var memory ? memory : null,
                PidsLimit: inspected.HostConfig?.PidsLimit is > 0 and var pids ? pids : null,
                ProcessLimitHits: pid > 0 ? ContainerCgroup.ProcessLimitHits(pid, inspected.ID) : 0);
        }
        catch (DockerContainerNotFoundException error)
        {
            throw new ContainerNotFoundException(idOrName, error);
        }
        catch (Exception error) when (IsEngineFailure(error, cancellationToken))
        {
            throw Wrap(error, $"read the events of container '{idOrName}'");
        }
    }

    public async Task<int> WaitUntilStoppedAsync(string idOrName, CancellationToken cancellationToken)
    {
        await EnsureReachableAsync($"wait for container '{idOrName}'", cancellationToken);
        try
        {
            // The wait API's default condition is "not-running"; its reply is tiny, unlike an
            // inspect, whose reflection-heavy deserialisation costs tens of ms under NativeAOT.
            var waited = await _client.Containers.WaitContainerAsync(idOrName, cancellationToken);
            return (int)waited.StatusCode;
        }
        catch (DockerContainerNotFoundException error)
        {
            throw new ContainerNotFoundException(idOrName, error);
        }
        catch (Exception error) when (IsEngineFailure(error, cancellationToken))
        {
            throw Wrap(error, $"watch container '{idOrName}'");
        }
    }

    public async Task<IContainerAttachment> AttachAsync(string container, CancellationToken cancellationToken)
    {
        await EnsureReachableAsync($"attach to container '{container}'", cancellationToken);
        try
        {
            var stream = await _client.Containers.AttachContainerAsync(
                container,
                tty: false,
                new ContainerAttachParameters { Stream = true, Stdin = true, Stdout = true, Stderr = true },
                cancellationToken);
            return new DockerAttachment(stream, container, this);
        }
        catch (DockerContainerNotFoundException error)
        {
            throw new ContainerNotFoundException(container, error);
        }
        catch (DockerApiException error) when (error.StatusCode == HttpStatusCode.Conflict)
        {
            throw new ContainerEngineException($"container '{container}' is not running: {Summarize(error.ResponseBody)}", error);
        }
        catch (Exception error) when (IsEngineFailure(error, cancellationToken))
        {
            throw Wrap(error, $"attach to container '{container}'");
        }
    }

    public async Task<IContainerOutput> ReadLogAsync(string container, DateTimeOffset since, bool follow, CancellationToken cancellationToken)
    {
        await EnsureReachableAsync($"read the log of container '{container}'", cancellationToken);
        try
        {
            // Seconds with nanoseconds, as the CLI sends it: whole seconds would repeat output.
            var ticks = since.UtcTicks - DateTimeOffset.UnixEpoch.UtcTicks;
            var sinceText = (ticks / TimeSpan.TicksPerSecond).ToString(CultureInfo.InvariantCulture) + "." + (ticks % TimeSpan.TicksPerSecond * 100).ToString("D9", CultureInfo.InvariantCulture);
            var stream = await _client.Containers.GetContainerLogsAsync(
                container,
                tty: false,
                new ContainerLogsParameters { ShowStdout = true, ShowStderr = true, Follow = follow, Since = sinceText },
                cancellationToken);
            return new DockerAttachment(stream, container, this);
        }
        catch (DockerContainerNotFoundException error)
        {
            throw new ContainerNotFoundException(container, error);
        }
        catch (Exception error) when (IsEngineFailure(error, cancellationToken))
        {
            throw Wrap(error, $"read the log of container '{container}'");
        }
    }

    private sealed class DockerAttachment(MultiplexedStream stream, string container, DockerContainerDriver driver) : IContainerAttachment
    {
        public async Task WriteAsync(ReadOnlyMemory<byte> data, CancellationToken cancellationToken)
        {
            try
            {
                var buffer = data.ToArray();
                await stream.WriteAsync(buffer, 0, buffer.Length, cancellationToken);
            }
            catch (Exception error) when (IsEngineFailure(error, cancellationToken) || error is ObjectDisposedException)
            {
                throw driver.Wrap(error, $"write to container '{container}'");
            }
        }

        public async Task<AttachmentChunk> ReadAsync(byte[] buffer, CancellationToken cancellationToken)
        {
            try
            {
                var result = await stream.ReadOutputAsync(buffer, 0, buffer.Length, cancellationToken);
                return new AttachmentChunk(result.Count, result.Target == MultiplexedStream.TargetStream.StandardError, result.EOF);
            }
            catch (Exception error) when (IsEngineFailure(error, cancellationToken))
            {
                throw driver.Wrap(error, $"read from container '{container}'");
            }
        }

        public void Dispose() => stream.Dispose();
    }

    public async Task<EngineDescription> DescribeAsync(CancellationToken cancellationToken)
    {
        await EnsureReachableAsync("describe the daemon", cancellationToken);
        try
        {
            var version = await _client.System.GetVersionAsync(cancellationToken);
            var info = await _client.System.GetSystemInfoAsync(cancellationToken);
            return new EngineDescription(version.Version ?? "?", version.APIVersion ?? "?", info.LiveRestoreEnabled,
                info.Runtimes?.Keys.Order(StringComparer.Ordinal).ToList() ?? []);
        }
        catch (Exception error) when (IsEngineFailure(error, cancellationToken))
        {
            throw Wrap(error, "describe the daemon");
        }
    }

    /// <summary>
    /// Docker.DotNet opens a new socket for each connection and, when the connect fails (the
    /// daemon is stopped), never disposes it: a process that polls a dead daemon, like the
    /// checkpoint agent, leaked a descriptor a second until a garbage collection happened to run.
    /// So once a call has failed to reach the daemon, each call first connects to it here, with a
    /// socket disposed either way, and fails without reaching the SDK until the daemon answers.
    /// </summary>
    private async Task EnsureReachableAsync(string action, CancellationToken cancellationToken)
    {
        if (!_unreachable || _daemonEndPoint is null)
            return;
        using var probe = _daemonEndPoint is UnixDomainSocketEndPoint
            ? new Socket(AddressFamily.Unix, SocketType.Stream, ProtocolType.Unspecified)
            : new Socket(SocketType.Stream, ProtocolType.Tcp);
        using var timeout = CancellationTokenSource.CreateLinkedTokenSource(cancellationToken);
        timeout.CancelAfter(TimeSpan.FromSeconds(10));
        try
        {
            await probe.ConnectAsync(_daemonEndPoint, timeout.Token);
            _unreachable = false;
        }
        catch (Exception error) when (error is SocketException or OperationCanceledException && !cancellationToken.IsCancellationRequested)
        {
            throw Wrap(error, action);
        }
    }

    /// <summary>Which exceptions are the engine's failures (as opposed to our own cancellation or bugs).</summary>
    private static bool IsEngineFailure(Exception error, CancellationToken cancellationToken) =>
        !(error is OperationCanceledException && cancellationToken.IsCancellationRequested)
        && error is DockerApiException or HttpRequestException or IOException or SocketException or TimeoutException or OperationCanceledException;

    private ContainerEngineException Wrap(Exception error, string action)
    {
        if (error is HttpRequestException or SocketException or IOException or TimeoutException or OperationCanceledException)
            _unreachable = true;
        var reason = error switch
        {
            DockerApiException api => $"the daemon answered {(int)api.StatusCode}: {Summarize(api.ResponseBody)}",
            HttpRequestException or SocketException or IOException => $"the Docker daemon at {_endpoint} cannot be reached ({error.Message})",
            OperationCanceledException or TimeoutException => $"the Docker daemon at {_endpoint} did not answer in time",
            _ => error.Message,
        };
        return new ContainerEngineException($"could not {action}: {reason}", error);
    }

    private static string Summarize(string? body)
    {
        var text = (body ?? "").Trim();
        // Docker wraps messages as {"message":"..."}; show the message, bounded.
        const string marker = "\"message\":\"";
        var start = text.IndexOf(marker, StringComparison.Ordinal);
        if (start >= 0)
        {
            var from = start + marker.Length;
            var end = text.IndexOf('"', from);
            if (end > from)
                text = text[from..end];
        }
        return text.Length > 400 ? text[..400] + "…" : text;
    }

    public void Dispose()
    {
        _client.Dispose();
        _configuration.Dispose();
    }

    /// <summary>
    /// Collects each event's action as the stream delivers it, on the reading call itself:
    /// Progress&lt;T&gt; would post them to the thread pool, where the last could arrive after the
    /// call had returned.
    /// </summary>
    private sealed class EventActions : IProgress<Message>
    {
        private readonly List<string> _actions = [];

        public void Report(Message value) => _actions.Add(value.Action ?? "");

        public int Count(Func<string, bool> predicate) => _actions.Count(predicate);

        public bool Contains(string action) => _actions.Contains(action);
    }
}
