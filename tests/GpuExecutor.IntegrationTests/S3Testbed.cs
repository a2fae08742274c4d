using System.Net;
using Amazon.Runtime;
using Amazon.S3;
using Amazon.S3.Model;

namespace GpuExecutor.IntegrationTests;

/// <summary>The test bed's s3rver, seeded through AWSSDK.S3 with the settings it needs (docs/testbed.md).</summary>
public static class S3Testbed
{
    public static string Endpoint => Environment.GetEnvironmentVariable("GPU_EXECUTOR_TEST_S3_ENDPOINT") ?? "http://127.0.0.1:4568";

    public static AmazonS3Client Client(string? endpoint = null) => new(
        new BasicAWSCredentials("S3RVER", "S3RVER"),
        new AmazonS3Config
        {
            ServiceURL = endpoint ?? Endpoint,
            ForcePathStyle = true,
            AuthenticationRegion = "us-east-1",
            RequestChecksumCalculation = RequestChecksumCalculation.WHEN_REQUIRED,
            ResponseChecksumValidation = ResponseChecksumValidation.WHEN_REQUIRED,
        });

    public static async Task CreateBucketAsync(AmazonS3Client client, string bucket) =>
        await client.PutBucketAsync(new PutBucketRequest { BucketName = bucket });

    public static async Task PutAsync(AmazonS3Client client, string bucket, string key, byte[] content) =>
        // Without UseChunkEncoding = false, s3rver stores the aws-chunked framing with the bytes.
        await client.PutObjectAsync(new PutObjectRequest { BucketName = bucket, Key = key, InputStream = new MemoryStream(content), UseChunkEncoding = false });

    /// <summary>The config lines of a store reading from this s3rver (or a proxy in front of it).</summary>
    public static string StoreConfig(string name, string endpoint, string allow) => $"""

        [stores.{name}]
        type = "s3"
        endpoint = "{endpoint}"
        path_style = true
        access_key_id = "S3RVER"
        secret_access_key = "not-checked-by-s3rver"
        allow = [{allow}]
        """;
}

/// <summary>What the proxy does to one object GET.</summary>
public enum InjectedFault
{
    None,
    ServiceUnavailable,
    ConnectionReset,
    TruncatedBody,
    SlowResponse,
    /// <summary>Holds the request for a minute: a download that will be killed before it ends.</summary>
    Hang,
}

/// <summary>
/// A counting reverse proxy in front of s3rver, to see from outside what a client asked of the
/// store. s3rver does not check signatures, so forwarding with another Host header is harmless.
/// </summary>
public sealed class CountingProxy : IDisposable
{
    private readonly GpuExecutor.Tests.LoopbackHttpServer _server;
    private readonly HttpClient _upstream = new() { Timeout = TimeSpan.FromMinutes(5) };
    private readonly string _target;
    private int _gets;
    private long _bytes;

    private readonly Func<int, InjectedFault> _faultFor;
    private readonly Func<int, InjectedFault> _putFaultFor;
    private int _faults;
    private int _puts;
    private long _bytesReceived;

    /// <param name="faultFor">Given the object GET's number (1, 2, …), what to do to it.</param>
    /// <param name="putFaultFor">The same for object PUTs (whole objects and parts): ServiceUnavailable, ConnectionReset or Hang.</param>
    public CountingProxy(string target, Func<int, InjectedFault>? faultFor = null, Func<int, InjectedFault>? putFaultFor = null)
    {
        _faultFor = faultFor ?? (_ => InjectedFault.None);
        _putFaultFor = putFaultFor ?? (_ => InjectedFault.None);
        _target = target.TrimEnd('/');
        _server = new GpuExecutor.Tests.LoopbackHttpServer(ForwardAsync);
    }

    public string Endpoint => _server.Url;

    /// <summary>A fault for an object PUT by its path ("/BUCKET/KEY"), for a test that must fail one kind of object.</summary>
    public Func<string, InjectedFault>? PutFaultForPath { get; init; }
    public int ObjectGets => Volatile.Read(ref _gets);
    /// <summary>Bytes of object bodies sent (listings not counted).</summary>
    public long ObjectBytesServed => Interlocked.Read(ref _bytes);
    public int FaultsInjected => Volatile.Read(ref _faults);
    public int ObjectPuts => Volatile.Read(ref _puts);
    /// <summary>Bytes of PUT bodies forwarded to the store.</summary>
    public long BytesReceived => Interlocked.Read(ref _bytesReceived);

    private readonly Lock _outage = new();
    private bool _down;
    private long _forwarded;

    /// <summary>Requests let through to the store so far (every one while the store is up).</summary>
    public long Forwarded
    {
        get
        {
            lock (_outage)
                return _forwarded;
        }
    }

    /// <summary>The store goes down: every request from now on is answered 503. Returns how many were let through before.</summary>
    public long GoDown()
    {
        lock (_outage)
        {
            _down = true;
            return _forwarded;
        }
    }

    public void ComeBack()
    {
        lock (_outage)
            _down = false;
    }

    private async Task ForwardAsync(HttpListenerContext context)
    {
        var incoming = context.Request;
        // One look at the outage and one count, together: a request is either refused or counted.
        bool refused;
        lock (_outage)
        {
            refused = _down;
            if (!refused)
                _forwarded++;
        }
        if (refused)
        {
            context.Response.StatusCode = 503;
            context.Response.Close();
            return;
        }
        try
        {
            using var request = new HttpRequestMessage(new HttpMethod(incoming.HttpMethod), _target + incoming.RawUrl);
            foreach (var name in incoming.Headers.AllKeys)
            {
                // Content headers travel with the body (below); Expect is between the client and us.
                if (name is null || name.Equals("Host", StringComparison.OrdinalIgnoreCase) || name.StartsWith("Content-", StringComparison.OrdinalIgnoreCase) || name.Equals("Expect", StringComparison.OrdinalIgnoreCase))
                    continue;
                request.Headers.TryAddWithoutValidation(name, incoming.Headers[name]);
            }
            // A GET of an object, not a listing (which carries a query string, list-type=2).
            var fault = InjectedFault.None;
            var isObjectGet = incoming.HttpMethod == "GET" && incoming.Url?.Query.Contains("list-type", StringComparison.Ordinal) != true;
            if (isObjectGet)
                fault = _faultFor(Interlocked.Increment(ref _gets));
            if (incoming.HttpMethod == "PUT")
                fault = _putFaultFor(Interlocked.Increment(ref _puts));
            if (incoming.HttpMethod == "PUT" && fault == InjectedFault.None && PutFaultForPath is { } byPath)
                fault = byPath(incoming.Url?.AbsolutePath ?? "");
            if (incoming.HasEntityBody && fault == InjectedFault.None)
            {
                var content = new MemoryStream();
                await incoming.InputStream.CopyToAsync(content);
                Interlocked.Add(ref _bytesReceived, content.Length);
                request.Content = new ByteArrayContent(content.ToArray());
                foreach (var name in incoming.Headers.AllKeys)
                {
                    if (name is not null && name.StartsWith("Content-", StringComparison.OrdinalIgnoreCase) && !name.Equals("Content-Length", StringComparison.OrdinalIgnoreCase))
                        request.Content.Headers.TryAddWithoutValidation(name, incoming.Headers[name]);
                }
            }
            if (fault != InjectedFault.None)
                Interlocked.Increment(ref _faults);
            switch (fault)
            {
                case InjectedFault.ServiceUnavailable:
                    context.Response.StatusCode = 503;
                    context.Response.Close();
                    return;
                case InjectedFault.ConnectionReset:
                    context.Response.Abort();
                    return;
                case InjectedFault.SlowResponse:
                    await Task.Delay(TimeSpan.FromSeconds(2));
                    break;
                case InjectedFault.Hang:
                    await Task.Delay(TimeSpan.FromMinutes(1));
                    break;
            }
            using var response = await _upstream.SendAsync(request, HttpCompletionOption.ResponseHeadersRead);
            context.Response.StatusCode = (int)response.StatusCode;
            foreach (var header in response.Headers.Concat(response.Content.Headers))
            {
                if (header.Key.Equals("Transfer-Encoding", StringComparison.OrdinalIgnoreCase))
                    continue;
                if (header.Key.Equals("Content-Length", StringComparison.OrdinalIgnoreCase))
                    context.Response.ContentLength64 = long.Parse(header.Value.First());
                else
                    context.Response.Headers[header.Key] = string.Join(",", header.Value);
            }
            await using var body = await response.Content.ReadAsStreamAsync();
            var buffer = new byte[1 << 16];
            int read;
            long sent = 0;
            var cutAt = fault == InjectedFault.TruncatedBody ? Math.Max(1, context.Response.ContentLength64 / 2) : long.MaxValue;
            while ((read = await body.ReadAsync(buffer)) > 0)
            {
                var allowed = (int)Math.Min(read, cutAt - sent);
                await context.Response.OutputStream.WriteAsync(buffer.AsMemory(0, allowed));
                if (isObjectGet)
                    Interlocked.Add(ref _bytes, allowed);
                sent += allowed;
                if (sent >= cutAt)
                {
                    // Half the promised bytes, then the connection drops.
                    context.Response.Abort();
                    return;
                }
            }
            context.Response.Close();
        }
        catch (Exception)
        {
            context.Response.Abort();
        }
    }

    public void Dispose()
    {
        _server.Dispose();
        _upstream.Dispose();
    }
}
