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
                string.Equals(container.State, "running", StringComparison.Ordinal),
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

    public async Task<bool?> IsRunningAsync(string idOrName, CancellationToken cancellationToken)
    {
        try
        {
            var inspected = await _client.Containers.InspectContainerAsync(idOrName, cancellationToken);
            return inspected.State?.Running ?? false;
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

    public async Task<long> ExecAsync(string container, IReadOnlyList<string> command, Stream? stdin, Stream stdout, Stream stderr, CancellationToken cancellationToken)
    {
        string execId;
        MultiplexedStream stream;
        try
        {
            var created = await _client.Exec.ExecCreateContainerAsync(
                container,
                new ContainerExecCreateParameters
                {
                    AttachStdin = stdin is not null,
                    AttachStdout = true,
                    AttachStderr = true,
                    Tty = false,
                    Cmd = command.ToList(),
                },
                cancellationToken);
            execId = created.ID;
            stream = await _client.Exec.StartAndAttachContainerExecAsync(execId, tty: false, cancellationToken);
        }
        catch (DockerContainerNotFoundException error)
        {
            throw new ContainerNotFoundException(container, error);
        }
        catch (DockerApiException error) when (error.StatusCode == HttpStatusCode.Conflict)
        {
            throw new ContainerEngineException($"container '{container}' is not running, so nothing can be run in it: {Summarize(error.ResponseBody)}", error);
        }
        catch (Exception error) when (IsEngineFailure(error, cancellationToken))
        {
            throw Wrap(error, $"start a process in container '{container}'");
        }

        using (stream)
        {
            try
            {
                // Input and output move at once: a script larger than the pipe buffers would
                // otherwise deadlock against a process that writes before reading all of it.
                var feed = stdin is null ? Task.CompletedTask : FeedAsync(stream, stdin, cancellationToken);
                await stream.CopyOutputToAsync(Stream.Null, stdout, stderr, cancellationToken);
                await feed;
            }
            catch (Exception error) when (IsEngineFailure(error, cancellationToken))
            {
                throw Wrap(error, $"stream output from container '{container}'");
            }
        }

        try
        {
            var inspected = await _client.Exec.InspectContainerExecAsync(execId, cancellationToken);
            return inspected.ExitCode;
        }
        catch (Exception error) when (IsEngineFailure(error, cancellationToken))
        {
            throw Wrap(error, $"read the exit code of a process in container '{container}'");
        }
    }

    private static async Task FeedAsync(MultiplexedStream stream, Stream stdin, CancellationToken cancellationToken)
    {
        var buffer = new byte[81920];
        try
        {
            int read;
            while ((read = await stdin.ReadAsync(buffer, cancellationToken)) > 0)
                await stream.WriteAsync(buffer, 0, read, cancellationToken);
        }
        catch (IOException)
        {
            // The process exited before reading all its input (e.g. `exit 42` early in a long
            // script); its exit code, not a broken pipe, is the outcome.
        }
        finally
        {
            try
            {
                stream.CloseWrite();
            }
            catch (Exception error) when (error is IOException or ObjectDisposedException or SocketException)
            {
                // Same as above: the other side is already gone.
            }
        }
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
