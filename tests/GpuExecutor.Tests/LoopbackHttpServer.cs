using System.Net;

namespace GpuExecutor.Tests;

/// <summary>
/// An <see cref="HttpListener"/> on a free loopback port that hands each request to a handler on
/// a task of its own: what the tests' stand-in servers (the fake GitLab API, the S3 proxy) share.
/// </summary>
public sealed class LoopbackHttpServer : IDisposable
{
    private readonly HttpListener _listener = new();
    private readonly Task _serving;

    public LoopbackHttpServer(Func<HttpListenerContext, Task> handle)
    {
        // HttpListener cannot bind port 0, so try random ports until one is free.
        for (var attempt = 0; ; attempt++)
        {
            Url = $"http://127.0.0.1:{Random.Shared.Next(20000, 50000)}";
            _listener.Prefixes.Clear();
            _listener.Prefixes.Add(Url + "/");
            try
            {
                _listener.Start();
                break;
            }
            catch (HttpListenerException) when (attempt < 20)
            {
            }
        }
        _serving = Task.Run(() => ServeAsync(handle));
    }

    /// <summary>http://127.0.0.1:PORT, without a trailing slash.</summary>
    public string Url { get; }

    private async Task ServeAsync(Func<HttpListenerContext, Task> handle)
    {
        while (_listener.IsListening)
        {
            HttpListenerContext context;
            try
            {
                context = await _listener.GetContextAsync();
            }
            catch (Exception error) when (error is HttpListenerException or ObjectDisposedException)
            {
                return;
            }
            _ = Task.Run(() => handle(context));
        }
    }

    public void Dispose()
    {
        _listener.Stop();
        _listener.Close();
        _serving.Wait(TimeSpan.FromSeconds(5));
    }
}
