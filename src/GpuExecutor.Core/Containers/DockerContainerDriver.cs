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

    public DockerContainerDriver(string endpoint)
    {
        _endpoint = endpoint;
        // No API version is pinned: Docker.DotNet sends unversioned paths, which dockerd 20.10
        // (API 1.41) and newer daemons both accept.
        _configuration = new DockerClientConfiguration(new Uri(endpoint), defaultTimeout: TimeSpan.FromSeconds(100));
        _client = _configuration.CreateClient();
    }

    public async Task<bool> ImageExistsAsync(string image, CancellationToken cancellationToken)
    {
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

    public async Task<int> WaitUntilStoppedAsync(string idOrName, CancellationToken cancellationToken)
    {
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

    /// <summary>Which exceptions are the engine's failures (as opposed to our own cancellation or bugs).</summary>
    private static bool IsEngineFailure(Exception error, CancellationToken cancellationToken) =>
        !(error is OperationCanceledException && cancellationToken.IsCancellationRequested)
        && error is DockerApiException or HttpRequestException or IOException or SocketException or TimeoutException or OperationCanceledException;

    private ContainerEngineException Wrap(Exception error, string action)
    {
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
}
